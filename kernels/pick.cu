// Template matching (Roseman FLCF) on the tomogram grid: the CUDA twin of the per-rotation
// work of lamella::pick::flcf::Matcher::score_rotation and of the best-score update of
// lamella::pick::flcf::search.
//
// Compiled at run time by NVRTC (src/device/cuda.rs). Every floating-point operation uses an
// explicit round-to-nearest intrinsic (__fadd_rn, __fsub_rn, __fmul_rn), which the compiler
// never contracts into FMAs, so each kernel evaluates the CPU's single-precision expressions
// in the CPU's order (the FFTs in between are cuFFT's and differ from rustfft's by rounding).
//
// The template box (rotation with trilinear interpolation, Fourier weight, masking and
// normalisation: Matcher::prepared_template) is prepared on the CPU by the same code as the
// CPU search and sent as the values at the mask support; these kernels do the work on the
// tomogram grid of N = nz*ny*nx voxels, H = nz*ny*(nx/2+1) half-spectrum bins.
//
// Layouts: real grids [z][y][x] f32 row-major; half spectra [z][y][x/2+1] complex, stored as
// interleaved (re, im) f32 pairs (cufftComplex). Indices are 64-bit; every kernel is a
// grid-stride loop, launched 1D with any grid size.

// padded[dst[k]] = values[k] for k < count: the prepared template at its wrapped place in
// the zero-padded tomogram grid (every other voxel stays 0; the support is the same for
// every rotation, so the previous rotation's values are all overwritten).
extern "C" __global__ void place_template_kernel(const float* __restrict__ values,
                                                 const unsigned long long* __restrict__ dst,
                                                 unsigned long long count,
                                                 float* __restrict__ padded)
{
    const unsigned long long stride = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long k = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         k < count; k += stride) {
        padded[dst[k]] = values[k];
    }
}

// spec[i] = conj(spec[i]) * tomo[i] for i < h (complex bins): the correlation of the placed
// template with the tomogram. Same expression as num_complex's Mul on (re, −im) × (fr, fi):
// re = a·fr − b·fi, im = a·fi + b·fr with a = re, b = −im.
extern "C" __global__ void conj_mul_kernel(float* __restrict__ spec,
                                           const float* __restrict__ tomo,
                                           unsigned long long h)
{
    const unsigned long long stride = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < h; i += stride) {
        const float a = spec[2 * i];
        const float b = -spec[2 * i + 1];
        const float fr = tomo[2 * i];
        const float fi = tomo[2 * i + 1];
        spec[2 * i] = __fsub_rn(__fmul_rn(a, fr), __fmul_rn(b, fi));
        spec[2 * i + 1] = __fadd_rn(__fmul_rn(a, fi), __fmul_rn(b, fr));
    }
}

// After the unnormalised inverse FFT `corr` of the product: score = (corr · scale) · inv_norm
// (scale = 1/N as f32, the CPU's inverse-FFT normalisation, then the local norm
// 1/(P·σ(x))), and the running maximum per voxel: a strictly greater score replaces the best
// and its rotation index, so of equal scores the first (lowest) rotation is kept, as the CPU
// search does; NaN never replaces. n = N voxels.
extern "C" __global__ void score_update_kernel(const float* __restrict__ corr,
                                               const float* __restrict__ inv_norm,
                                               float scale,
                                               float* __restrict__ best,
                                               int* __restrict__ index,
                                               int rotation,
                                               unsigned long long n)
{
    const unsigned long long stride = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < n; i += stride) {
        const float s = __fmul_rn(__fmul_rn(corr[i], scale), inv_norm[i]);
        if (s > best[i]) {
            best[i] = s;
            index[i] = rotation;
        }
    }
}
