#!/usr/bin/env python3
"""Draw Camwire's app icon (a camera on a shield) as a 1024x1024 PNG, with no dependencies.

Usage: python3 icons/make_icon.py icons/icon-source.png
Then:  npx --yes @tauri-apps/cli@^2 icon icons/icon-source.png -o icons

Each shape is a signed distance function in pixels. Its coverage of a pixel is
clamp(0.5 - distance, 0, 1), so edges are anti-aliased without supersampling.
"""

import math
import struct
import sys
import zlib

SIZE = 1024
CENTER = SIZE / 2

BACKGROUND_TOP = (17, 94, 140)
BACKGROUND_BOTTOM = (9, 52, 92)
SHIELD = (244, 248, 251)
CAMERA = (12, 68, 112)
LENS_GLASS = (30, 140, 180)


def rounded_box(x, y, center_x, center_y, half_width, half_height, radius):
    qx = abs(x - center_x) - half_width + radius
    qy = abs(y - center_y) - half_height + radius
    outside = math.hypot(max(qx, 0.0), max(qy, 0.0))
    inside = min(max(qx, qy), 0.0)
    return outside + inside - radius


def circle(x, y, center_x, center_y, radius):
    return math.hypot(x - center_x, y - center_y) - radius


# Shield: a box with rounded top corners down to SHIELD_MIDDLE, then two circular arcs that
# leave the sides vertically and meet at the tip.
SHIELD_HALF_WIDTH = 300.0
SHIELD_TOP = 170.0
SHIELD_MIDDLE = 520.0
SHIELD_TIP = 890.0
ARC_RADIUS = (SHIELD_HALF_WIDTH**2 + (SHIELD_TIP - SHIELD_MIDDLE) ** 2) / (2 * SHIELD_HALF_WIDTH)


def shield(x, y):
    top_half_height = (SHIELD_MIDDLE - SHIELD_TOP) / 2
    top = rounded_box(x, y, CENTER, SHIELD_TOP + top_half_height, SHIELD_HALF_WIDTH, top_half_height, 70.0)
    # The top box's rounded bottom corners would notch the join, so its lower half is squared
    # off by taking the plain box distance below the middle of the straight part.
    if y > SHIELD_TOP + top_half_height:
        top = max(abs(x - CENTER) - SHIELD_HALF_WIDTH, y - SHIELD_MIDDLE)

    offset = ARC_RADIUS - SHIELD_HALF_WIDTH
    left_arc = circle(x, y, CENTER + offset, SHIELD_MIDDLE, ARC_RADIUS)
    right_arc = circle(x, y, CENTER - offset, SHIELD_MIDDLE, ARC_RADIUS)
    bottom = max(left_arc, right_arc, SHIELD_MIDDLE - y)
    return min(top, bottom)


def camera_body(x, y):
    body = rounded_box(x, y, CENTER, 540.0, 200.0, 128.0, 36.0)
    viewfinder = rounded_box(x, y, CENTER - 70.0, 404.0, 70.0, 30.0, 14.0)
    return min(body, viewfinder)


def mix(base, color, alpha):
    return tuple(b + (c - b) * alpha for b, c in zip(base, color))


def coverage(distance):
    return min(max(0.5 - distance, 0.0), 1.0)


def pixel(x, y):
    background = rounded_box(x, y, CENTER, CENTER, 480.0, 480.0, 210.0)
    alpha = coverage(background)
    if alpha == 0.0:
        return (0, 0, 0, 0)

    color = mix(BACKGROUND_TOP, BACKGROUND_BOTTOM, y / SIZE)
    color = mix(color, SHIELD, coverage(shield(x, y)))
    color = mix(color, CAMERA, coverage(camera_body(x, y)))
    color = mix(color, SHIELD, coverage(circle(x, y, CENTER, 548.0, 96.0)))
    color = mix(color, LENS_GLASS, coverage(circle(x, y, CENTER, 548.0, 68.0)))
    color = mix(color, SHIELD, coverage(circle(x, y, CENTER + 24.0, 524.0, 16.0)))
    color = mix(color, SHIELD, coverage(circle(x, y, CENTER + 140.0, 458.0, 14.0)))
    return tuple(round(channel) for channel in color) + (round(alpha * 255),)


def png(width, height, rows):
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(row) for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_icon.py OUTPUT.png")

    rows = []
    for row in range(SIZE):
        values = []
        for column in range(SIZE):
            values.extend(pixel(column + 0.5, row + 0.5))
        rows.append(values)

    with open(sys.argv[1], "wb") as output:
        output.write(png(SIZE, SIZE, rows))


if __name__ == "__main__":
    main()
