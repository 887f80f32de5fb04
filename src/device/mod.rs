//! Compute devices: CPU (rayon) and CUDA (cudarc + NVRTC, dynamically loaded).
