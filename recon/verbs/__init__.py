"""One module per `mrdiff` verb; each exposes ``HELP`` (one line) and ``main(argv) -> int``."""
