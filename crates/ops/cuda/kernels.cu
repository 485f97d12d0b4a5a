// CUDA versions of pupil's ops, NCHW and contiguous. Each entry point exists for float
// (_f32) and double (_f64); the Rust wrappers upcast half precision to f32. One thread per
// output element unless noted; gradients that several outputs share use atomicAdd (as
// PyTorch's CUDA kernels do), so their summation order is not fixed.
#include <math.h>
#include <stdint.h>

struct Win {
    int h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow;
};

#define GRID_LOOP(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (int64_t)blockDim.x * gridDim.x)

// ---- depthwise convolution: x [n, c, h, w], filter [c, 1, kh, kw] ----

template <typename T>
__device__ void depthwise_fwd(const T* x, const T* wt, T* y, int c, int64_t total, Win g) {
    GRID_LOOP(idx, total) {
        int ox = idx % g.ow;
        int oy = (idx / g.ow) % g.oh;
        int64_t p = idx / ((int64_t)g.ow * g.oh);
        int ch = p % c;
        const T* xp = x + p * g.h * g.w;
        const T* wk = wt + (int64_t)ch * g.kh * g.kw;
        T acc = 0;
        for (int i = 0; i < g.kh; ++i) {
            int iy = oy * g.sh + i * g.dh - g.pt;
            if (iy < 0 || iy >= g.h) continue;
            for (int j = 0; j < g.kw; ++j) {
                int ix = ox * g.sw + j * g.dw - g.pl;
                if (ix < 0 || ix >= g.w) continue;
                acc += xp[iy * g.w + ix] * wk[i * g.kw + j];
            }
        }
        y[idx] = acc;
    }
}

// One thread per input pixel: gathers every output that read it (no atomics).
template <typename T>
__device__ void depthwise_bwd_input(const T* gy, const T* wt, T* gx, int c, int64_t total, Win g) {
    GRID_LOOP(idx, total) {
        int ix = idx % g.w;
        int iy = (idx / g.w) % g.h;
        int64_t p = idx / ((int64_t)g.w * g.h);
        int ch = p % c;
        const T* gp = gy + p * g.oh * g.ow;
        const T* wk = wt + (int64_t)ch * g.kh * g.kw;
        T acc = 0;
        for (int i = 0; i < g.kh; ++i) {
            int ty = iy + g.pt - i * g.dh;
            if (ty < 0 || ty % g.sh != 0) continue;
            int oy = ty / g.sh;
            if (oy >= g.oh) continue;
            for (int j = 0; j < g.kw; ++j) {
                int tx = ix + g.pl - j * g.dw;
                if (tx < 0 || tx % g.sw != 0) continue;
                int ox = tx / g.sw;
                if (ox >= g.ow) continue;
                acc += gp[oy * g.ow + ox] * wk[i * g.kw + j];
            }
        }
        gx[idx] = acc;
    }
}

// One block per (channel, tap): a block-wide sum over batch and output pixels, in double.
template <typename T>
__device__ void depthwise_bwd_filter(const T* x, const T* gy, T* gw, int n, int c, Win g) {
    __shared__ double part[256];
    int kk = g.kh * g.kw;
    int ch = blockIdx.x / kk, tap = blockIdx.x % kk;
    int i = tap / g.kw, j = tap % g.kw;
    int64_t plane = (int64_t)g.oh * g.ow;
    double acc = 0;
    for (int64_t t = threadIdx.x; t < n * plane; t += blockDim.x) {
        int64_t b = t / plane;
        int o = t % plane;
        int oy = o / g.ow, ox = o % g.ow;
        int iy = oy * g.sh + i * g.dh - g.pt;
        int ix = ox * g.sw + j * g.dw - g.pl;
        if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
        int64_t p = b * c + ch;
        acc += (double)gy[p * plane + o] * (double)x[p * g.h * g.w + iy * g.w + ix];
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) gw[blockIdx.x] = (T)part[0];
}

// ---- max pooling with -inf padding; ties to the first maximum in row-major order ----

template <typename T>
__device__ void max_pool_fwd(const T* x, T* y, int64_t total, Win g) {
    GRID_LOOP(idx, total) {
        int ox = idx % g.ow;
        int oy = (idx / g.ow) % g.oh;
        int64_t p = idx / ((int64_t)g.ow * g.oh);
        const T* xp = x + p * g.h * g.w;
        T m = -INFINITY;
        for (int i = 0; i < g.kh; ++i) {
            int iy = oy * g.sh + i * g.dh - g.pt;
            if (iy < 0 || iy >= g.h) continue;
            for (int j = 0; j < g.kw; ++j) {
                int ix = ox * g.sw + j * g.dw - g.pl;
                if (ix < 0 || ix >= g.w) continue;
                T v = xp[iy * g.w + ix];
                if (v > m) m = v;
            }
        }
        y[idx] = m;
    }
}

// gx must be zeroed; each output sends its gradient to its argmax (recomputed).
template <typename T>
__device__ void max_pool_bwd(const T* x, const T* gy, T* gx, int64_t total, Win g) {
    GRID_LOOP(idx, total) {
        int ox = idx % g.ow;
        int oy = (idx / g.ow) % g.oh;
        int64_t p = idx / ((int64_t)g.ow * g.oh);
        const T* xp = x + p * g.h * g.w;
        T best = -INFINITY;
        int arg_y = -1, arg_x = -1;
        bool claimed = false;
        for (int i = 0; i < g.kh; ++i) {
            int iy = oy * g.sh + i * g.dh - g.pt;
            for (int j = 0; j < g.kw; ++j) {
                int ix = ox * g.sw + j * g.dw - g.pl;
                bool inside = iy >= 0 && iy < g.h && ix >= 0 && ix < g.w;
                T v = inside ? xp[iy * g.w + ix] : (T)-INFINITY;
                // The first tap claims the slot so an all -inf window still has an argmax.
                if (v > best || !claimed) {
                    best = v;
                    claimed = true;
                    arg_y = inside ? iy : -1;
                    arg_x = inside ? ix : -1;
                }
            }
        }
        // A window whose maximum is padding sends its gradient nowhere.
        if (arg_y >= 0) atomicAdd(gx + p * g.h * g.w + arg_y * g.w + arg_x, gy[idx]);
    }
}

// ---- resizing; source taps come from the host (the CPU op's own coordinates) ----
// taps: i0/i1 per output row (yi) and column (xi) interleaved, weights likewise.

template <typename T>
__device__ void bilinear_fwd(const T* x, T* y, int64_t total, int h, int w, int oh, int ow,
                             const int* yi, const T* yl, const int* xi, const T* xl) {
    GRID_LOOP(idx, total) {
        int ox = idx % ow;
        int oy = (idx / ow) % oh;
        int64_t p = idx / ((int64_t)ow * oh);
        const T* r0 = x + p * h * w + (int64_t)yi[2 * oy] * w;
        const T* r1 = x + p * h * w + (int64_t)yi[2 * oy + 1] * w;
        int x0 = xi[2 * ox], x1 = xi[2 * ox + 1];
        T a0 = xl[2 * ox], a1 = xl[2 * ox + 1];
        y[idx] = yl[2 * oy] * (a0 * r0[x0] + a1 * r0[x1]) + yl[2 * oy + 1] * (a0 * r1[x0] + a1 * r1[x1]);
    }
}

// gx must be zeroed.
template <typename T>
__device__ void bilinear_bwd(const T* gy, T* gx, int64_t total, int h, int w, int oh, int ow,
                             const int* yi, const T* yl, const int* xi, const T* xl) {
    GRID_LOOP(idx, total) {
        int ox = idx % ow;
        int oy = (idx / ow) % oh;
        int64_t p = idx / ((int64_t)ow * oh);
        T gv = gy[idx];
        T a = yl[2 * oy] * gv, b = yl[2 * oy + 1] * gv;
        T* base = gx + p * h * w;
        int y0 = yi[2 * oy], y1 = yi[2 * oy + 1], x0 = xi[2 * ox], x1 = xi[2 * ox + 1];
        atomicAdd(base + y0 * w + x0, a * xl[2 * ox]);
        atomicAdd(base + y0 * w + x1, a * xl[2 * ox + 1]);
        atomicAdd(base + y1 * w + x0, b * xl[2 * ox]);
        atomicAdd(base + y1 * w + x1, b * xl[2 * ox + 1]);
    }
}

template <typename T>
__device__ void nearest_fwd(const T* x, T* y, int64_t total, int h, int w, int oh, int ow,
                            const int* iy, const int* ix) {
    GRID_LOOP(idx, total) {
        int ox = idx % ow;
        int oy = (idx / ow) % oh;
        int64_t p = idx / ((int64_t)ow * oh);
        y[idx] = x[p * h * w + (int64_t)iy[oy] * w + ix[ox]];
    }
}

// gx must be zeroed.
template <typename T>
__device__ void nearest_bwd(const T* gy, T* gx, int64_t total, int h, int w, int oh, int ow,
                            const int* iy, const int* ix) {
    GRID_LOOP(idx, total) {
        int ox = idx % ow;
        int oy = (idx / ow) % oh;
        int64_t p = idx / ((int64_t)ow * oh);
        atomicAdd(gx + p * h * w + (int64_t)iy[oy] * w + ix[ox], gy[idx]);
    }
}

#define ENTRIES(T, S)                                                                              \
    extern "C" __global__ void depthwise_fwd_##S(const T* x, const T* wt, T* y, int c,            \
                                                 int64_t total, Win g) {                           \
        depthwise_fwd<T>(x, wt, y, c, total, g);                                                   \
    }                                                                                              \
    extern "C" __global__ void depthwise_bwd_input_##S(const T* gy, const T* wt, T* gx, int c,    \
                                                       int64_t total, Win g) {                     \
        depthwise_bwd_input<T>(gy, wt, gx, c, total, g);                                           \
    }                                                                                              \
    extern "C" __global__ void depthwise_bwd_filter_##S(const T* x, const T* gy, T* gw, int n,    \
                                                        int c, Win g) {                            \
        depthwise_bwd_filter<T>(x, gy, gw, n, c, g);                                               \
    }                                                                                              \
    extern "C" __global__ void max_pool_fwd_##S(const T* x, T* y, int64_t total, Win g) {         \
        max_pool_fwd<T>(x, y, total, g);                                                           \
    }                                                                                              \
    extern "C" __global__ void max_pool_bwd_##S(const T* x, const T* gy, T* gx, int64_t total,    \
                                                Win g) {                                           \
        max_pool_bwd<T>(x, gy, gx, total, g);                                                      \
    }                                                                                              \
    extern "C" __global__ void bilinear_fwd_##S(const T* x, T* y, int64_t total, int h, int w,    \
                                                int oh, int ow, const int* yi, const T* yl,       \
                                                const int* xi, const T* xl) {                      \
        bilinear_fwd<T>(x, y, total, h, w, oh, ow, yi, yl, xi, xl);                                \
    }                                                                                              \
    extern "C" __global__ void bilinear_bwd_##S(const T* gy, T* gx, int64_t total, int h, int w,  \
                                                int oh, int ow, const int* yi, const T* yl,       \
                                                const int* xi, const T* xl) {                      \
        bilinear_bwd<T>(gy, gx, total, h, w, oh, ow, yi, yl, xi, xl);                              \
    }                                                                                              \
    extern "C" __global__ void nearest_fwd_##S(const T* x, T* y, int64_t total, int h, int w,     \
                                               int oh, int ow, const int* iy, const int* ix) {     \
        nearest_fwd<T>(x, y, total, h, w, oh, ow, iy, ix);                                         \
    }                                                                                              \
    extern "C" __global__ void nearest_bwd_##S(const T* gy, T* gx, int64_t total, int h, int w,   \
                                               int oh, int ow, const int* iy, const int* ix) {     \
        nearest_bwd<T>(gy, gx, total, h, w, oh, ow, iy, ix);                                       \
    }

ENTRIES(float, f32)
ENTRIES(double, f64)
