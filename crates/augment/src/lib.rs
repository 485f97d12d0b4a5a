//! pupil-augment: the paper's augmentation ladder (built in the augmentation issue).
