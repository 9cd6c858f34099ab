/* The heatmap's figure: what a picture of attention weights shows and
 * where, in integer units. figure_init computes all of it in memory, from
 * the weights down to each panel's corner, so its layout can be checked
 * without drawing; figure_draw (figure_draw.c) puts it on a canvas. */
#ifndef QKV_FIGURE_H
#define QKV_FIGURE_H

#include "canvas.h"
#include "colour.h"
#include "picture.h"
#include "text.h"

#include <stdint.h>

/* Units: the margin round the picture, the gap between panels and before
 * the legend, the legend bar's width, the height a token label needs (a
 * cell at least this tall gets one), the width of the "queries" axis
 * title, and the least distance between ticks when cells are smaller. */
enum {
    MARGIN = 16, GAP = 24, BAR_W = 16, LABEL_PITCH = 10, AXIS_W = 18, TICK_SPACING = 14,
    NOTE_PITCH = 14 /* from one note's baseline to the next */
};

typedef struct figure {
    /* what is shown */
    int64_t npanels;                    /* heads drawn, one panel each */
    float *shown;                       /* npanels x nq x nk shown weights (owned) */
    const char *const *names;           /* panel names, or NULL */
    int64_t fq, fk;                     /* block sizes of the downsampling, 1 = none */
    int64_t nq, nk;                     /* cells a side */
    const char *const *labels_q;        /* lq query token labels, or NULL: indices */
    const char *const *labels_k;        /* lk key token labels, or NULL */
    double vmax;                        /* the weight at the top of the colour scale */
    int token_labels; /* a tick per token, with its label when given */
    int values;       /* each cell's weight written in it */
    int tooltips;     /* cells carry a tooltip (SVG) */
    int64_t step;     /* a tick every step cells, both axes */
    int keys_across;  /* key ticks written across, not upwards */
    char title[TEXT_BYTES];
    char notes[3][TEXT_BYTES]; /* what was changed to fit, under the panels */
    int nnotes;
    rgb lut[RAMP_LEVELS];
    /* where */
    int64_t cell, cols, rows; /* cell size; panels across and down */
    int64_t mx, my;           /* the matrix's offset inside a panel */
    int64_t pw, ph;           /* panel size */
    int64_t px0, py0;         /* the first panel's corner */
    int64_t lx, ly, lh, lw;   /* legend bar corner, bar height, legend width */
    int64_t notes_y;          /* baseline of the first note */
    int64_t width, height;    /* the whole picture */
} figure;

/* Fills f with the figure of pic's heads: their
 * weights (in [0, 1]), downsampled to the cells a picture of pic->heads
 * panels has room for, the colour scale (vmax <= 0: the default, 1;
 * vmax_auto: the largest weight shown), the notes that say what was
 * changed, and the layout. pic->title becomes display text; f keeps
 * pic's names and labels, which must outlive it. Returns 0 when out of
 * memory. figure_free frees what it holds. */
int figure_init(figure *f, const picture *pic, double vmax, int vmax_auto);
void figure_free(figure *f);

/* The corner of panel p, 0 <= p < npanels, row-major in cols columns. */
void figure_panel_at(const figure *f, int64_t p, int64_t *x, int64_t *y);

/* The text of the tick beside cell i of the keys' axis (keys = 1) or the
 * queries' (keys = 0): the token's label when token labels are drawn and
 * were given, else the index of the cell's first token. */
void figure_tick_text(const figure *f, int keys, int64_t i, char out[TEXT_BYTES]);

/* The legend: its title, and the text of tick k of 0..4 (k/4 of vmax). */
const char *figure_legend_title(const figure *f);
void figure_legend_tick(const figure *f, int k, char out[TEXT_BYTES]);

/* Draws f on cv: the title, one panel per head, the legend, the notes. */
void figure_draw(const figure *f, const canvas *cv);

#endif
