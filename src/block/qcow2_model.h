/* The qcow2 model (qcow2/image.h) behind an open image, for commands that work on qcow2
 * structures the block layer does not expose (bitmap). */
#ifndef QIMG_BLOCK_QCOW2_MODEL_H
#define QIMG_BLOCK_QCOW2_MODEL_H

#include "block/image.h"
#include "qcow2/image.h"

/* img's model if img is an open qcow2 image, else NULL. */
struct qcow2_image *qcow2_model_of(image_t *img);

#endif
