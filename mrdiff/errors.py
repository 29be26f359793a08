"""Errors that the command line turns into one clear line on stderr and exit status 2."""


class InputError(Exception):
    """Bad user input (file, option or data); the message names the file and the problem."""
