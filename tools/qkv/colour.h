/* The heatmap's colours: the colour scale that maps a weight to one of
 * RAMP_LEVELS sRGB colours, and the inks text is drawn in. */
#ifndef QKV_COLOUR_H
#define QKV_COLOUR_H

#include <stdint.h>

typedef struct rgb {
    uint8_t r, g, b;
} rgb;

/* The scale's anchors, at weights 0, 1/12, ..., 1 of the scale (SVG draws
 * its legend as a gradient through them), and the levels between them. */
#define RAMP_ANCHORS 13
#define RAMP_LEVELS 256
extern const rgb ramp_anchor[RAMP_ANCHORS];

/* The RAMP_LEVELS colours of the scale, interpolated between the anchors;
 * relative luminance rises strictly from each level to the next. */
void ramp_fill(rgb lut[RAMP_LEVELS]);

/* The level of weight v on a scale from 0 to vmax > 0: 0 for v <= 0 or
 * NaN, RAMP_LEVELS - 1 from vmax on. */
int ramp_level(double v, double vmax);

/* WCAG relative luminance of an sRGB colour, 0 (black) to 1 (white). */
double rgb_luminance(rgb c);

/* Black or white, whichever contrasts more with the background bg. */
rgb rgb_text_on(rgb bg);

/* Text and marks, the notes under the figure, the background. */
#define INK ((rgb){34, 34, 34})
#define NOTE_INK ((rgb){85, 85, 85})
#define WHITE ((rgb){255, 255, 255})

#endif
