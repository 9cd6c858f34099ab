/* The heatmap's figure drawn on a canvas (figure.h): everything where
 * figure_init's layout put it. */
#include "figure.h"

#include <stdio.h>

/* A cell's tooltip: which query and key, and the weight. */
static void cell_title(const figure *f, int64_t i, int64_t j, float v, char *out, size_t len)
{
    char lq[TEXT_BYTES] = "", lk[TEXT_BYTES] = "";
    if (f->labels_q) {
        lq[0] = ' ';
        display_text(f->labels_q[i], LABEL_CHARS, lq + 1);
    }
    if (f->labels_k) {
        lk[0] = ' ';
        display_text(f->labels_k[j], LABEL_CHARS, lk + 1);
    }
    snprintf(out, len, "query %lld%s, key %lld%s: %.4f", (long long)i, lq, (long long)j, lk,
             (double)v);
}

/* The cells, row-major in one group per head: test_heatmap reads them
 * back in this order. */
static void draw_cells(const figure *f, const canvas *cv, const float *v, int64_t x0, int64_t y0)
{
    const int64_t c = f->cell;
    const int tips = f->tooltips && cv_tooltips(cv);
    cv_group_begin(cv, "cells");
    for (int64_t i = 0; i < f->nq; i++)
        for (int64_t j = 0; j < f->nk; j++) {
            rgb col = f->lut[ramp_level(v[i * f->nk + j], f->vmax)];
            char tip[3 * TEXT_BYTES];
            if (tips) cell_title(f, i, j, v[i * f->nk + j], tip, sizeof tip);
            cv_rect_tip(cv, x0 + j * c, y0 + i * c, c, c, col, tips ? tip : NULL);
        }
    cv_group_end(cv);
}

/* Each cell's weight written in it, in black or white for contrast. */
static void draw_values(const figure *f, const canvas *cv, const float *v, int64_t x0,
                        int64_t y0)
{
    const int64_t c = f->cell;
    char t[TEXT_BYTES];
    cv_group_begin(cv, "values");
    for (int64_t i = 0; i < f->nq; i++)
        for (int64_t j = 0; j < f->nk; j++) {
            float w = v[i * f->nk + j];
            snprintf(t, sizeof t, "%.2f", (double)w);
            cv_text(cv, x0 + j * c + c / 2, y0 + i * c + (c + 7) / 2, t, 10, ANCHOR_MIDDLE, 0, 0,
                    rgb_text_on(f->lut[ramp_level(w, f->vmax)]));
        }
    cv_group_end(cv);
}

static void draw_panel(const figure *f, const canvas *cv, int64_t p)
{
    int64_t ox, oy;
    figure_panel_at(f, p, &ox, &oy);
    int64_t c = f->cell, x0 = ox + f->mx, y0 = oy + f->my;
    int64_t mw = f->nk * c, mh = f->nq * c;
    char t[TEXT_BYTES];
    if (f->names) {
        display_text(f->names[p], TITLE_CHARS, t);
        cv_text(cv, x0 + mw / 2, oy + 11, t, 10, ANCHOR_MIDDLE, 0, 1, INK);
    }
    cv_text(cv, x0 + mw / 2, oy + (f->names ? 16 : 0) + 10, "keys", 10, ANCHOR_MIDDLE, 0, 0,
            INK);
    /* The rows' label runs down beside the matrix, centred on it, moved
     * up into the key labels' height when the matrix is shorter than the
     * word, and cut to "q" when even the panel is. */
    const char *ql = text_width("queries", 10) <= f->ph ? "queries" : "q";
    const int64_t qh = text_width(ql, 10);
    int64_t qy = y0 + mh / 2;
    if (qy + (qh + 1) / 2 > oy + f->ph) qy = oy + f->ph - (qh + 1) / 2;
    cv_text(cv, ox + 10, qy, ql, 10, ANCHOR_MIDDLE, 1, 0, INK);

    int64_t tick_len = f->step > 1 ? 4 : 0;
    for (int64_t j = 0; j < f->nk; j += f->step) {
        figure_tick_text(f, 1, j, t);
        if (f->keys_across)
            cv_text(cv, x0 + j * c + c / 2, y0 - 4 - tick_len, t, 10, ANCHOR_MIDDLE, 0, 0, INK);
        else
            cv_text(cv, x0 + j * c + (c + 7) / 2, y0 - 4 - tick_len, t, 10, ANCHOR_START, 1, 0,
                    INK);
        if (tick_len) cv_rect(cv, x0 + j * c + c / 2, y0 - 3, 1, 3, INK);
    }
    for (int64_t i = 0; i < f->nq; i += f->step) {
        figure_tick_text(f, 0, i, t);
        cv_text(cv, x0 - 4 - tick_len, y0 + i * c + (c + 7) / 2, t, 10, ANCHOR_END, 0, 0, INK);
        if (tick_len) cv_rect(cv, x0 - 3, y0 + i * c + c / 2, 3, 1, INK);
    }

    const float *v = f->shown + p * f->nq * f->nk;
    draw_cells(f, cv, v, x0, y0);
    if (f->values) draw_values(f, cv, v, x0, y0);
}

static void draw_legend(const figure *f, const canvas *cv)
{
    char t[TEXT_BYTES];
    cv_text(cv, f->lx, f->ly - 8, figure_legend_title(f), 10, ANCHOR_START, 0, 0, INK);
    cv_ramp_bar(cv, f->lx, f->ly, BAR_W, f->lh, f->lut);
    for (int k = 0; k <= 4; k++) {
        int64_t y = f->ly + f->lh - f->lh * k / 4;
        cv_rect(cv, f->lx + BAR_W, y - (k == 4 ? 0 : 1), 4, 1, INK);
        figure_legend_tick(f, k, t);
        cv_text(cv, f->lx + BAR_W + 8, y + 3, t, 10, ANCHOR_START, 0, 0, INK);
    }
}

void figure_draw(const figure *f, const canvas *cv)
{
    cv_begin(cv, f->width, f->height, f->title);
    cv_rect(cv, 0, 0, f->width, f->height, WHITE);
    cv_text(cv, MARGIN, MARGIN + 12, f->title, 15, ANCHOR_START, 0, 1, INK);
    for (int64_t p = 0; p < f->npanels; p++) draw_panel(f, cv, p);
    draw_legend(f, cv);
    for (int k = 0; k < f->nnotes; k++)
        cv_text(cv, MARGIN, f->notes_y + NOTE_PITCH * k, f->notes[k], 10, ANCHOR_START, 0, 0,
                NOTE_INK);
    cv_end(cv);
}
