// Voxel-driven back-projection: the CUDA twin of lamella::recon::backproject::backproject_cpu.
//
// Compiled at run time by NVRTC (src/device/cuda.rs). Every floating-point operation uses an
// explicit round-to-nearest intrinsic (__fadd_rn, __fmul_rn, __fsub_rn), which the compiler
// never contracts into FMAs, so the result equals the CPU twin's to rounding of the same
// single-precision expressions, evaluated in the same order.
//
// images : [n_tilt][img_ny][img_nx] f32, row-major
// coeffs : [n_tilt][8] f32:  u = c3 + iy*c1 + iz*c2 + ix*c0,  v = c7 + iy*c5 + iz*c6 + ix*c4
// vol    : slab [slab_nz][ny][nx] f32 holding volume z planes z0 .. z0 + slab_nz
// launch : block (bx, by, 1), grid (ceil(nx/bx), ceil(ny/by), slab_nz),
//          dynamic shared memory n_tilt * 8 * sizeof(float)

__device__ __forceinline__ float bilinear(const float* __restrict__ img, int nx, int ny,
                                          float u, float v)
{
    // 0 outside [0, n-1] (the NaN-safe form of the CPU test)
    if (!(u >= 0.0f && v >= 0.0f && u <= (float)(nx - 1) && v <= (float)(ny - 1))) {
        return 0.0f;
    }
    // u, v >= 0 here: truncation is floor (the CPU twin truncates too)
    int x0 = min((int)u, nx - 2);
    int y0 = min((int)v, ny - 2);
    float fx = __fsub_rn(u, (float)x0);
    float fy = __fsub_rn(v, (float)y0);
    const float* p = img + (size_t)y0 * nx + x0;
    float p00 = __ldg(p);
    float p01 = __ldg(p + 1);
    float p10 = __ldg(p + nx);
    float p11 = __ldg(p + nx + 1);
    float gx = __fsub_rn(1.0f, fx);
    float a = __fadd_rn(__fmul_rn(p00, gx), __fmul_rn(p01, fx));
    float b = __fadd_rn(__fmul_rn(p10, gx), __fmul_rn(p11, fx));
    return __fadd_rn(__fmul_rn(a, __fsub_rn(1.0f, fy)), __fmul_rn(b, fy));
}

extern "C" __global__ void backproject_kernel(const float* __restrict__ images,
                                              int n_tilt, int img_ny, int img_nx,
                                              const float* __restrict__ coeffs,
                                              float* __restrict__ vol,
                                              int z0, int ny, int nx)
{
    extern __shared__ float sc[];
    const int nthreads = blockDim.x * blockDim.y;
    for (int i = threadIdx.y * blockDim.x + threadIdx.x; i < n_tilt * 8; i += nthreads) {
        sc[i] = coeffs[i];
    }
    __syncthreads();

    const int ix = blockIdx.x * blockDim.x + threadIdx.x;
    const int iy = blockIdx.y * blockDim.y + threadIdx.y;
    const int zs = blockIdx.z;               // plane inside the slab
    if (ix >= nx || iy >= ny) {
        return;
    }
    const float fx = (float)ix;
    const float fy = (float)iy;
    const float fz = (float)(z0 + zs);
    const size_t plane = (size_t)img_ny * img_nx;

    float acc = 0.0f;
    for (int t = 0; t < n_tilt; ++t) {
        const float* c = sc + 8 * t;
        // same order as the CPU: line offset first, then the x term
        float ul = __fadd_rn(__fadd_rn(c[3], __fmul_rn(fy, c[1])), __fmul_rn(fz, c[2]));
        float vl = __fadd_rn(__fadd_rn(c[7], __fmul_rn(fy, c[5])), __fmul_rn(fz, c[6]));
        float u = __fadd_rn(ul, __fmul_rn(fx, c[0]));
        float v = __fadd_rn(vl, __fmul_rn(fx, c[4]));
        acc = __fadd_rn(acc, bilinear(images + (size_t)t * plane, img_nx, img_ny, u, v));
    }
    vol[((size_t)zs * ny + iy) * nx + ix] = acc;
}
