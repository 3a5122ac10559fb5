#!/usr/bin/env python3
"""Draw the tray icons, one per state, as 64x64 PNGs, with no dependencies.

Usage: python3 icons/make_tray_icons.py icons/tray

Each icon is the app icon of make_icon.py, sampled 4x4 per pixel. Signed out and disconnected
are grey. The other states keep the colours and get a status dot in the lower right corner,
amber while connecting, green when connected and red on an error.
"""

import os
import sys

import make_icon

SIZE = 64
SAMPLES = 4
SCALE = make_icon.SIZE / SIZE

DOT_CENTER = 48.0
DOT_RADIUS = 13.0
DOT_RING = 3.0
RING = (255, 255, 255)

# name: (grey, dot colour or None)
STATES = {
    "signed-out": (True, None),
    "disconnected": (True, (120, 120, 120)),
    "connecting": (False, (232, 160, 32)),
    "connected": (False, (46, 170, 90)),
    "error": (False, (210, 48, 40)),
}


def base_pixel(x, y):
    """Average the app icon over SAMPLES x SAMPLES points of the 64 px pixel (x, y)."""
    total = [0.0, 0.0, 0.0, 0.0]
    for row in range(SAMPLES):
        for column in range(SAMPLES):
            sample_x = (x + (column + 0.5) / SAMPLES) * SCALE
            sample_y = (y + (row + 0.5) / SAMPLES) * SCALE
            red, green, blue, alpha = make_icon.pixel(sample_x, sample_y)
            # Premultiply, so transparent samples do not darken the edge.
            total[0] += red * alpha
            total[1] += green * alpha
            total[2] += blue * alpha
            total[3] += alpha
    count = SAMPLES * SAMPLES
    alpha = total[3] / count
    if alpha == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (total[0] / total[3], total[1] / total[3], total[2] / total[3], alpha)


def grey(color):
    red, green, blue, alpha = color
    luma = 0.299 * red + 0.587 * green + 0.114 * blue
    return (luma, luma, luma, alpha)


def over(base, color, coverage):
    """Paint an opaque colour with the given coverage over a straight-alpha pixel."""
    red, green, blue, alpha = base
    alpha_out = coverage * 255 + alpha * (1 - coverage)
    if alpha_out == 0:
        return (0.0, 0.0, 0.0, 0.0)
    mixed = [
        (color[index] * coverage * 255 + channel * alpha * (1 - coverage)) / alpha_out
        for index, channel in enumerate((red, green, blue))
    ]
    return (mixed[0], mixed[1], mixed[2], alpha_out)


def icon(is_grey, dot):
    rows = []
    for y in range(SIZE):
        values = []
        for x in range(SIZE):
            color = base_pixel(x, y)
            if is_grey:
                color = grey(color)
            if dot is not None:
                distance = make_icon.circle(x + 0.5, y + 0.5, DOT_CENTER, DOT_CENTER, DOT_RADIUS)
                color = over(color, RING, make_icon.coverage(distance))
                inner = make_icon.circle(x + 0.5, y + 0.5, DOT_CENTER, DOT_CENTER, DOT_RADIUS - DOT_RING)
                color = over(color, dot, make_icon.coverage(inner))
            values.extend(round(min(max(channel, 0), 255)) for channel in color)
        rows.append(values)
    return make_icon.png(SIZE, SIZE, rows)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_tray_icons.py OUTPUT_FOLDER")

    folder = sys.argv[1]
    os.makedirs(folder, exist_ok=True)
    for name, (is_grey, dot) in STATES.items():
        with open(os.path.join(folder, f"{name}.png"), "wb") as output:
            output.write(icon(is_grey, dot))


if __name__ == "__main__":
    main()
