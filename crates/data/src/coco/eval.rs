//! COCO bbox evaluation.
