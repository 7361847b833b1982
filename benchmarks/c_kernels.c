/* Kernels in C for benchmarks/c_kernels.py, which measures what a compiled fast path would buy minise
 * (issue 10's open option). Not part of minise: the script compiles this file with the system's C
 * compiler, checks every result against minise's own, and times both.
 *
 * Plain C99 with the GCC/Clang vector extension: `vec` is V numbers of type REAL, and `a + b`, `a * b`
 * act on all of them at once; the compiler maps a vec to AVX-512, AVX2 or NEON registers (-march=native).
 * The script builds it twice: REAL=float (timed) and REAL=double (checked against minise in float64,
 * where rounding cannot hide a wrong formula).
 *
 * conv3x3: y = conv(x, w) for 3×3 windows, stride 1, padding 1, NCHW, channels a multiple of V.
 *   Each input plane is copied into a zero-bordered plane of (H + 2) × (W + 2), flat, so tap (u, v) of
 *   the output at q = i·(W + 2) + j is the input at q + u·(W + 2) + v. Outputs are computed over the
 *   padded width (j ≥ W: two columns per row computed and dropped), V consecutive positions and V output
 *   channels at a time: V accumulators; per (input channel, tap), one load of V inputs and V
 *   multiply-adds, each by one weight. The valid columns are then copied into y. ∂L/∂x of the same
 *   conv is this kernel on ∂L/∂y with the weight flipped and transposed (conv3x3_pack's flip).
 * batchnorm_forward / batchnorm_backward: training-mode batch norm over (N, C, L), L a multiple of V,
 *   the formulas of minise.fast.batchnorm: sums per (n, c) plane, then over n; σ² = mean((x − μ)²);
 *   ∂L/∂x = k·g + c₁·(x − μ) + c₀ with k = γ/σ. One call does the channels [c0, c1).
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#ifndef REAL
#define REAL float
#endif
/* Numbers per vector: a whole AVX-512 register where there is one (32 of them hold conv3x3's 16
   accumulators of 16 floats); elsewhere 32 bytes, so that the V accumulators of V numbers still fit in
   AVX2's 16 registers or NEON's 32. */
#ifndef V
#if defined(__AVX512F__)
#define V ((int)(64 / sizeof(REAL)))
#else
#define V ((int)(32 / sizeof(REAL)))
#endif
#endif

int vector_lanes(void) { return V; }

typedef REAL vec __attribute__((vector_size(V * sizeof(REAL)), aligned(sizeof(REAL))));

static inline vec load(const REAL *p) { return *(const vec *)p; }
static inline void store(REAL *p, vec a) { *(vec *)p = a; }

static inline REAL hsum(vec a) {
    REAL s = 0;
    for (int k = 0; k < V; k++) s += a[k];
    return s;
}

/* The length of one zero-bordered plane, (H + 2)·(W + 2), plus V + 2 zeros: a vector load at any
   position the kernel computes stays inside the buffer. */
static size_t plane_size(int h, int w) { return (size_t)(h + 2) * (w + 2) + V + 2; }

/* The weight in the kernel's order: wp[ob][c][t][k] = w[V·ob + k][c][t] (t = 3u + v, the tap). With
   flip, the weight of ∂L/∂x: w'[o][c][t] = w[c][o][8 − t]; w is given as (o_w, c_w, 3, 3) either way. */
void conv3x3_pack(const REAL *w, int o_w, int c_w, int flip, REAL *wp) {
    int out = flip ? c_w : o_w, in = flip ? o_w : c_w;
    for (int o = 0; o < out; o++)
        for (int c = 0; c < in; c++)
            for (int t = 0; t < 9; t++) {
                REAL value = flip ? w[((size_t)c * c_w + o) * 9 + 8 - t] : w[((size_t)o * c_w + c) * 9 + t];
                wp[(((size_t)(o / V) * in + c) * 9 + t) * V + o % V] = value;
            }
}

/* Samples [n0, n1) of y (N, O, H, W) = conv3x3(x (N, C, H, W)), wp from conv3x3_pack. Returns 0, or 1
   when memory ran out. */
int conv3x3(const REAL *x, const REAL *wp, REAL *y, int n0, int n1, int c, int o, int h, int w) {
    int wpad = w + 2;
    size_t ps = plane_size(h, w), q_end = (size_t)h * wpad, row = q_end + V;
    REAL *xp = malloc((size_t)c * ps * sizeof(REAL));
    REAL *out = malloc(row * V * sizeof(REAL));
    if (!xp || !out) {
        free(xp);
        free(out);
        return 1;
    }
    memset(xp, 0, (size_t)c * ps * sizeof(REAL)); /* the borders, once: each sample writes only inside them */
    for (int n = n0; n < n1; n++) {
        for (int ch = 0; ch < c; ch++)
            for (int i = 0; i < h; i++)
                memcpy(xp + ch * ps + (size_t)(i + 1) * wpad + 1, x + (((size_t)n * c + ch) * h + i) * w,
                       w * sizeof(REAL));
        for (int ob = 0; ob < o / V; ob++) {
            const REAL *wb = wp + (size_t)ob * c * 9 * V;
            for (size_t q = 0; q < q_end; q += V) {
                vec acc[V] = {0};
                for (int ch = 0; ch < c; ch++) {
                    const REAL *xq = xp + ch * ps + q, *wt = wb + (size_t)ch * 9 * V;
                    for (int u = 0; u < 3; u++)
                        for (int v = 0; v < 3; v++, wt += V) {
                            vec xv = load(xq + u * wpad + v);
#pragma GCC unroll 16
                            for (int k = 0; k < V; k++) acc[k] += xv * wt[k];
                        }
                }
                for (int k = 0; k < V; k++) store(out + k * row + q, acc[k]);
            }
            REAL *yb = y + ((size_t)n * o + (size_t)ob * V) * h * w;
            for (int k = 0; k < V; k++)
                for (int i = 0; i < h; i++)
                    memcpy(yb + ((size_t)k * h + i) * w, out + k * row + (size_t)i * wpad, w * sizeof(REAL));
        }
    }
    free(xp);
    free(out);
    return 0;
}

/* Per-plane sums for the channels [c0, c1) of a (N, C, L): sum[n·C + ch] = Σ_l a and, when b is given,
   dot[n·C + ch] = Σ_l a·(b − shift[ch]). */
static void plane_sums(const REAL *a, const REAL *b, const REAL *shift, REAL *sum, REAL *dot, int n, int c,
                       int l, int c0, int c1) {
    for (int i = 0; i < n; i++)
        for (int ch = c0; ch < c1; ch++) {
            size_t at = ((size_t)i * c + ch) * l;
            vec s = {0}, d = {0};
            REAL m = shift ? shift[ch] : 0;
            for (int j = 0; j < l; j += V) {
                vec va = load(a + at + j);
                s += va;
                if (b) d += va * (load(b + at + j) - m);
            }
            if (sum) sum[(size_t)i * c + ch] = hsum(s);
            if (dot) dot[(size_t)i * c + ch] = hsum(d);
        }
}

/* Σ over n of part[n·C + ch], in sample order. */
static REAL over_samples(const REAL *part, int n, int c, int ch) {
    REAL s = 0;
    for (int i = 0; i < n; i++) s += part[(size_t)i * c + ch];
    return s;
}

/* Training batch norm, forward, channels [c0, c1) of x (N, C, L): the batch's mean and (biased)
   variance, invstd = 1/sqrt(var + eps), y = (x − μ)·(γ·invstd) + β. scratch: N·C numbers. */
void batchnorm_forward(const REAL *x, const REAL *gamma, const REAL *beta, REAL eps, REAL *y, REAL *mean,
                       REAL *var, REAL *invstd, REAL *scratch, int n, int c, int l, int c0, int c1) {
    REAL m = (REAL)n * l;
    plane_sums(x, NULL, NULL, scratch, NULL, n, c, l, c0, c1);
    for (int ch = c0; ch < c1; ch++) mean[ch] = over_samples(scratch, n, c, ch) / m;
    plane_sums(x, x, mean, NULL, scratch, n, c, l, c0, c1); /* Σ x·(x − μ) = Σ (x − μ)², as μ = mean(x) */
    for (int ch = c0; ch < c1; ch++) {
        var[ch] = over_samples(scratch, n, c, ch) / m;
        invstd[ch] = 1 / __builtin_sqrt(var[ch] + eps);
    }
    for (int i = 0; i < n; i++)
        for (int ch = c0; ch < c1; ch++) {
            size_t at = ((size_t)i * c + ch) * l;
            REAL k = gamma[ch] * invstd[ch], mu = mean[ch], b = beta[ch];
            for (int j = 0; j < l; j += V) store(y + at + j, (load(x + at + j) - mu) * k + b);
        }
}

/* Its backward, channels [c0, c1): ∂L/∂x, ∂L/∂γ = Σ g·x̂, ∂L/∂β = Σ g. scratch: 2·N·C numbers. */
void batchnorm_backward(const REAL *gy, const REAL *x, const REAL *gamma, const REAL *mean, const REAL *invstd,
                        REAL *gx, REAL *ggamma, REAL *gbeta, REAL *scratch, int n, int c, int l, int c0, int c1) {
    REAL m = (REAL)n * l;
    REAL *sums = scratch, *dots = scratch + (size_t)n * c;
    plane_sums(gy, x, mean, sums, dots, n, c, l, c0, c1);
    for (int ch = c0; ch < c1; ch++) {
        gbeta[ch] = over_samples(sums, n, c, ch);
        ggamma[ch] = over_samples(dots, n, c, ch) * invstd[ch];
    }
    for (int i = 0; i < n; i++)
        for (int ch = c0; ch < c1; ch++) {
            size_t at = ((size_t)i * c + ch) * l;
            REAL k = gamma[ch] * invstd[ch], mu = mean[ch];
            REAL k1 = -k * invstd[ch] * ggamma[ch] / m, k0 = -k * gbeta[ch] / m;
            for (int j = 0; j < l; j += V)
                store(gx + at + j, k * load(gy + at + j) + k1 * (load(x + at + j) - mu) + k0);
        }
}
