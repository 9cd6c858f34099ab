/* The heatmap's colour scale (colour.h). */
#include "colour.h"

#include <math.h>

/* Picked on a path through CIELAB whose lightness L* rises evenly from 10
 * to 94 while the hue turns from violet through blue and green to yellow;
 * in gamut, sRGB. Linear interpolation between them into 256 levels keeps
 * the relative luminance strictly rising from one level to the next
 * (test_heatmap checks every level), so order survives greyscale and
 * colour blindness. */
const rgb ramp_anchor[RAMP_ANCHORS] = {
    {45, 1, 76},    {29, 32, 104},  {0, 56, 118},   {0, 76, 126},   {0, 96, 132},
    {0, 117, 139},  {0, 138, 145},  {0, 160, 145},  {9, 183, 128},  {107, 199, 104},
    {153, 216, 92}, {202, 230, 79}, {255, 242, 71},
};

void ramp_fill(rgb lut[RAMP_LEVELS])
{
    const int n = RAMP_ANCHORS;
    for (int k = 0; k < RAMP_LEVELS; k++) {
        /* position k/255 along n-1 segments, in integers so that rounding
         * is exact: segment i, fraction rem/255 */
        int i = k * (n - 1) / (RAMP_LEVELS - 1);
        int rem = k * (n - 1) - i * (RAMP_LEVELS - 1);
        if (i == n - 1) i = n - 2, rem = RAMP_LEVELS - 1;
        const rgb *a = &ramp_anchor[i], *b = &ramp_anchor[i + 1];
        const int ca[3] = {a->r, a->g, a->b}, cb[3] = {b->r, b->g, b->b};
        int c[3];
        for (int ch = 0; ch < 3; ch++) /* round half up of ca + (cb-ca)*rem/255 */
            c[ch] = (2 * (255 * ca[ch] + (cb[ch] - ca[ch]) * rem) + 255) / 510;
        lut[k] = (rgb){(uint8_t)c[0], (uint8_t)c[1], (uint8_t)c[2]};
    }
}

int ramp_level(double v, double vmax)
{
    double t = v / vmax;
    if (!(t > 0)) return 0;
    if (t >= 1) return RAMP_LEVELS - 1;
    return (int)(t * (RAMP_LEVELS - 1) + 0.5);
}

double rgb_luminance(rgb c)
{
    double ch[3] = {c.r / 255.0, c.g / 255.0, c.b / 255.0};
    for (int i = 0; i < 3; i++)
        ch[i] = ch[i] <= 0.04045 ? ch[i] / 12.92 : pow((ch[i] + 0.055) / 1.055, 2.4);
    return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2];
}

/* The two contrast ratios are equal at luminance 0.179. */
rgb rgb_text_on(rgb bg)
{
    return rgb_luminance(bg) > 0.179 ? (rgb){0, 0, 0} : (rgb){255, 255, 255};
}
