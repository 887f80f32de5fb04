// Voxel-driven forward projection: the CUDA twin of
// lamella::recon::project::forward_project_cpu (the exact adjoint of backproject.cu).
//
// Compiled at run time by NVRTC (src/device/cuda.rs). Every voxel splats its value into the
// four pixels that bilinear sampling at its (u, v) reads, with the same weights, so that this
// is the transpose of backproject_kernel. Coordinates and weights use explicit
// round-to-nearest intrinsics (no FMA contraction), as the CPU twin; the accumulation order
// differs (atomicAdd), so CPU and GPU agree to rounding of the sums.
//
// vol    : slab [slab_nz][ny][nx] f32 holding volume z planes z0 .. z0 + slab_nz
// coeffs : [n_tilt][8] f32:  u = c3 + iy*c1 + iz*c2 + ix*c0,  v = c7 + iy*c5 + iz*c6 + ix*c4
// images : [n_tilt][img_ny][img_nx] f32, row-major, accumulated (+=); zero them first
// launch : block (bx, by, 1), grid (ceil(nx/bx), ceil(ny/by), slab_nz),
//          dynamic shared memory n_tilt * 8 * sizeof(float)

extern "C" __global__ void project_kernel(const float* __restrict__ vol,
                                          int z0, int ny, int nx,
                                          const float* __restrict__ coeffs,
                                          float* __restrict__ images,
                                          int n_tilt, int img_ny, int img_nx)
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
    const float val = vol[((size_t)zs * ny + iy) * nx + ix];
    if (val == 0.0f) {
        return;                              // adds nothing (the CPU adds +0.0)
    }
    const float fx = (float)ix;
    const float fy = (float)iy;
    const float fz = (float)(z0 + zs);
    const float umax = (float)(img_nx - 1);
    const float vmax = (float)(img_ny - 1);
    const size_t plane = (size_t)img_ny * img_nx;

    for (int t = 0; t < n_tilt; ++t) {
        const float* c = sc + 8 * t;
        // the back-projector's expressions, in its order
        float ul = __fadd_rn(__fadd_rn(c[3], __fmul_rn(fy, c[1])), __fmul_rn(fz, c[2]));
        float vl = __fadd_rn(__fadd_rn(c[7], __fmul_rn(fy, c[5])), __fmul_rn(fz, c[6]));
        float u = __fadd_rn(ul, __fmul_rn(fx, c[0]));
        float v = __fadd_rn(vl, __fmul_rn(fx, c[4]));
        if (!(u >= 0.0f && v >= 0.0f && u <= umax && v <= vmax)) {
            continue;
        }
        // u, v >= 0: truncation is floor (as the CPU twin)
        int x0 = min((int)u, img_nx - 2);
        int y0 = min((int)v, img_ny - 2);
        float wx = __fsub_rn(u, (float)x0);
        float wy = __fsub_rn(v, (float)y0);
        float a = __fmul_rn(val, __fsub_rn(1.0f, wy));
        float b = __fmul_rn(val, wy);
        float gx = __fsub_rn(1.0f, wx);
        float* p = images + (size_t)t * plane + (size_t)y0 * img_nx + x0;
        atomicAdd(p, __fmul_rn(a, gx));
        atomicAdd(p + 1, __fmul_rn(a, wx));
        atomicAdd(p + img_nx, __fmul_rn(b, gx));
        atomicAdd(p + img_nx + 1, __fmul_rn(b, wx));
    }
}
