"""MediaPipe Face Mesh landmark index groups (pure data: no model runtime is imported for them).

From mediapipe/python/solutions/face_mesh_connections.py, each in contour order. "Right" is the
subject's right, on the left of an unmirrored photo.
"""

LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip
# The oval from one ear (454, level with the eyes) under the chin (152) to the other (234):
# the part of the face that moves when the mouth opens.
JAW = FACE_OVAL[FACE_OVAL.index(454) : FACE_OVAL.index(234) + 1]
# The widest points of the oval, used for the face width.
FACE_SIDES = (234, 454)
