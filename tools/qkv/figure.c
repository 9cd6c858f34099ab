/* The heatmap's figure in memory (figure.h): the weights shown, and the
 * layout, from the cell size to the picture's width. */
#include "figure.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Cells a side and the panel span, by number of heads drawn: one head may
 * use 640 units and 128 cells, a grid less per head. */
static void panel_limits(int64_t heads, int64_t *side, int64_t *span)
{
    if (heads == 1) *side = 128, *span = 640;
    else if (heads <= 4) *side = 64, *span = 384;
    else if (heads <= 16) *side = 48, *span = 240;
    else *side = 32, *span = 160;
}

/* Means of fq x fk blocks (the last ones may be smaller) of one head. */
static void downsample(float *out, const float *w, int64_t lq, int64_t lk, int64_t fq,
                       int64_t fk, int64_t nq, int64_t nk)
{
    for (int64_t i = 0; i < nq; i++) {
        int64_t r0 = i * fq, r1 = r0 + fq < lq ? r0 + fq : lq;
        for (int64_t j = 0; j < nk; j++) {
            int64_t c0 = j * fk, c1 = c0 + fk < lk ? c0 + fk : lk;
            double s = 0;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t k = c0; k < c1; k++) s += w[r * lk + k];
            out[i * nk + j] = (float)(s / (double)((r1 - r0) * (c1 - c0)));
        }
    }
}

void figure_tick_text(const figure *f, int keys, int64_t i, char out[TEXT_BYTES])
{
    const char *const *l = keys ? f->labels_k : f->labels_q;
    if (f->token_labels && l) {
        display_text(l[i], LABEL_CHARS, out);
    } else {
        snprintf(out, TEXT_BYTES, "%lld", (long long)(i * (keys ? f->fk : f->fq)));
    }
}

/* The width of the widest tick text of an axis. */
static int64_t tick_width(const figure *f, int keys)
{
    int64_t n = keys ? f->nk : f->nq, w = 0;
    char t[TEXT_BYTES];
    for (int64_t i = 0; i < n; i += f->step) {
        figure_tick_text(f, keys, i, t);
        int64_t tw = text_width(t, 10);
        if (tw > w) w = tw;
    }
    return w;
}

/* 1, 2, 5, 10, 20, ...: the first at least `min`. */
static int64_t nice_step(int64_t min)
{
    for (int64_t s = 1;; s *= 10) {
        if (s >= min) return s;
        if (2 * s >= min) return 2 * s;
        if (5 * s >= min) return 5 * s;
    }
}

const char *figure_legend_title(const figure *f)
{
    return f->fq * f->fk > 1 ? "mean weight" : "weight";
}

void figure_legend_tick(const figure *f, int k, char out[TEXT_BYTES])
{
    snprintf(out, TEXT_BYTES, "%.3g", f->vmax * k / 4);
}

void figure_panel_at(const figure *f, int64_t p, int64_t *x, int64_t *y)
{
    *x = f->px0 + (p % f->cols) * (f->pw + GAP);
    *y = f->py0 + (p / f->cols) * (f->ph + GAP);
}

/* What is shown: the cells, their size, the colour scale and the notes
 * that say what was changed. Returns 0 when out of memory. */
static int choose_cells(figure *fig, const picture *pic, double vmax, int vmax_auto)
{
    const int64_t count = pic->heads, lq = pic->lq, lk = pic->lk;
    int64_t side, span;
    panel_limits(count, &side, &span);
    fig->npanels = count;
    fig->names = pic->head_names;
    fig->fq = (lq + side - 1) / side, fig->fk = (lk + side - 1) / side;
    fig->nq = (lq + fig->fq - 1) / fig->fq, fig->nk = (lk + fig->fk - 1) / fig->fk;
    fig->labels_q = pic->labels_q, fig->labels_k = pic->labels_k;
    int64_t per = fig->nq * fig->nk;
    fig->shown = malloc((size_t)(count * per) * sizeof *fig->shown);
    if (!fig->shown) return 0;
    double largest = 0;
    for (int64_t p = 0; p < count; p++)
        downsample(fig->shown + p * per, pic->w + p * lq * lk, lq, lk, fig->fq, fig->fk,
                   fig->nq, fig->nk);
    for (int64_t e = 0; e < count * per; e++)
        if (fig->shown[e] > largest) largest = fig->shown[e];
    fig->vmax = vmax_auto ? (largest > 0 ? largest : 1) : vmax > 0 ? vmax : 1;

    int64_t big = fig->nq > fig->nk ? fig->nq : fig->nk;
    fig->cell = span / big;
    if (fig->cell > 48) fig->cell = 48;
    if (fig->cell < 4) fig->cell = 4;
    int labelled = fig->labels_q || fig->labels_k, full = fig->fq == 1 && fig->fk == 1;
    /* One head keeps its labels readable by growing past the span. */
    if (count == 1 && labelled && full && fig->cell < LABEL_PITCH) fig->cell = LABEL_PITCH;

    if (!full) /* "\xc3\x97" is U+00D7, the multiplication sign */
        snprintf(fig->notes[fig->nnotes++], TEXT_BYTES,
                 "%s%lld\xc3\x97%lld shown as %lld\xc3\x97%lld: mean of %lld\xc3\x97%lld blocks; "
                 "ticks give a block's first token",
                 count > 1 ? "each head " : "", (long long)lq, (long long)lk, (long long)fig->nq,
                 (long long)fig->nk, (long long)fig->fq, (long long)fig->fk);
    if (labelled && (!full || fig->cell < LABEL_PITCH))
        snprintf(fig->notes[fig->nnotes++], TEXT_BYTES,
                 "token labels left out: too many tokens to read");
    if (vmax_auto)
        snprintf(fig->notes[fig->nnotes++], TEXT_BYTES,
                 "colour scale from 0 to the largest weight drawn, %.3g (--vmax auto)",
                 fig->vmax);
    else if (vmax > 0 && vmax < 1)
        snprintf(fig->notes[fig->nnotes++], TEXT_BYTES, "colours saturate at weight %.3g (--vmax)",
                 fig->vmax);
    else if (vmax < 0 && largest < 0.25) /* a dark picture: say how to see more */
        snprintf(fig->notes[fig->nnotes++], TEXT_BYTES,
                 "the largest weight drawn is %.3g: --vmax auto spreads the colours over 0 to it",
                 largest);
    ramp_fill(fig->lut);
    return 1;
}

/* Where everything goes, once the cells are chosen. */
static void layout(figure *f)
{
    f->cols = (int64_t)ceil(sqrt((double)f->npanels));
    while (f->cols * f->cols < f->npanels) f->cols++; /* sqrt's rounding */
    f->rows = (f->npanels + f->cols - 1) / f->cols;

    f->token_labels = f->cell >= LABEL_PITCH && f->fq == 1 && f->fk == 1;
    /* Cells too small for a text each: sparser ticks, TICK_SPACING apart or more. */
    f->step = f->cell >= LABEL_PITCH ? 1 : nice_step((TICK_SPACING + f->cell - 1) / f->cell);
    f->values = f->fq == 1 && f->fk == 1 && f->nq <= 16 && f->nk <= 16 && f->cell >= 28;
    f->tooltips = f->fq == 1 && f->fk == 1 && f->npanels * f->nq * f->nk <= 16384;

    /* Key ticks run upwards unless they fit across their cells. */
    int64_t kw = tick_width(f, 1), marks = f->step > 1 ? 4 : 0;
    f->keys_across = kw <= f->step * f->cell - 2;
    f->my = (f->names ? 16 : 0) + 16 + (f->keys_across ? 9 : kw) + 4 + marks;
    f->mx = AXIS_W + tick_width(f, 0) + 4 + marks;
    f->pw = f->mx + f->nk * f->cell;
    f->ph = f->my + f->nq * f->cell;
    f->px0 = MARGIN;
    f->py0 = MARGIN + 26;
    int64_t panels_w = f->cols * f->pw + (f->cols - 1) * GAP;
    int64_t panels_h = f->rows * f->ph + (f->rows - 1) * GAP;

    f->lx = f->px0 + panels_w + GAP;
    f->ly = f->py0 + f->my;
    f->lh = f->nq * f->cell;
    if (f->lh < 120) f->lh = 120;
    if (f->lh > 320) f->lh = 320;
    char t[TEXT_BYTES];
    int64_t tick_w = 0;
    for (int k = 0; k <= 4; k++) {
        figure_legend_tick(f, k, t);
        if (text_width(t, 10) > tick_w) tick_w = text_width(t, 10);
    }
    f->lw = BAR_W + 8 + tick_w;
    int64_t lt = text_width(figure_legend_title(f), 10);
    if (lt > f->lw) f->lw = lt;

    int64_t right = f->lx + f->lw;
    if (MARGIN + text_width(f->title, 15) > right) right = MARGIN + text_width(f->title, 15);
    int64_t bottom = f->py0 + panels_h;
    if (f->ly + f->lh + 6 > bottom) bottom = f->ly + f->lh + 6;
    f->notes_y = bottom + 20;
    for (int k = 0; k < f->nnotes; k++) {
        int64_t w = MARGIN + text_width(f->notes[k], 10);
        if (w > right) right = w;
    }
    f->width = right + MARGIN;
    f->height = (f->nnotes ? f->notes_y + (f->nnotes - 1) * NOTE_PITCH + 4 : bottom) + MARGIN;
}

int figure_init(figure *f, const picture *pic, double vmax, int vmax_auto)
{
    memset(f, 0, sizeof *f);
    if (!choose_cells(f, pic, vmax, vmax_auto)) return 0;
    display_text(pic->title ? pic->title : "", TITLE_CHARS, f->title);
    layout(f);
    return 1;
}

void figure_free(figure *f)
{
    free(f->shown);
    f->shown = NULL;
}
