"""mrdiff: undersampled MRI reconstruction with diffusion-model priors.

Conventions (decided once; every module follows them)
-----------------------------------------------------
Tensors
    * Images are ``(B, H, W)`` ``complex64`` tensors.
    * k-space is ``(B, C, H, W)`` ``complex64`` (``C = 1`` for single-coil data).
    * Masks are boolean and broadcast against k-space: ``(W,)`` for 1-D Cartesian
      (phase-encode along the last axis, as in fastMRI), ``(H, W)`` for 2-D masks,
      or any shape broadcastable to ``(B, C, H, W)``.
    * Coil maps are ``(B, C, H, W)`` ``complex64`` with ``sum_c |S_c|^2 = 1`` inside the
      support and 0 outside. Single-coil data uses ``maps=None``.
    * Complex tensors become two real channels (real, imag) only at the network boundary, with the
      one conversion ``mrdiff.priors.precond.complex_to_channels``.

Fourier transform
    Centred, orthonormal 2-D FFT over the last two axes (``mrdiff.fft.fft2c``), identical to
    ``fastmri.fft2c`` and to ``fftshift(fft2(ifftshift(x), norm="ortho"))``.

Noise
    sigma is the standard deviation **per real component**: a noisy image is
    ``x + sigma * (randn + 1j * randn)`` (``mrdiff.noise.complex_randn``). Note that
    ``torch.randn(dtype=complex64)`` has variance 1/2 per component and is never used.
    Measurement noise in k-space follows the same rule.

Scale
    Images are scaled once, at the reconstruction entry point, by ``mrdiff.scaling.image_scale``
    (the 99th percentile of the magnitude) and the scale is undone once at the end. Training
    normalises each ground-truth image with the same function, so the prior sees the same range.

Randomness
    Every function that draws noise takes a ``torch.Generator``. Generators are seeded per
    (file, slice) with ``mrdiff.noise.seed_for``; nothing inside ``mrdiff`` seeds globally.

Immutability
    Operators and methods are immutable after construction: a new mask means a new operator, and
    the per-item and repeated views (``op.item(b)``, ``op.repeat(k)``) are new operators too.

Data consistency
    ``CartesianOperator.project`` (measured region, optional sub-region, weight ``lam``) is the one
    k-space projection: every method that imposes measurements (POCS, ILVR, CCDF, RePaint, MCG) calls
    it; item-by-item code (the sigpy CS baselines, the Gaussian posterior) uses ``op.item(b)``.

Precision
    Sampler arithmetic runs in float64/complex128-capable code paths where it matters; the
    network may run in bf16 autocast on CUDA.
"""

__version__ = "0.1.0"
