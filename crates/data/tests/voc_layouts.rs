//! VOC folders as exporters write them: with and without ImageSets lists, and the errors of
//! a folder that lacks what a task needs.
use pupil_data::io;
use pupil_data::voc::{VocAnnotation, VocDataset, VocObject, VocTask};
use pupil_data::{Dataset, Image, Plane};
use std::path::Path;

fn write_image(root: &Path, id: &str, x: f32) {
    io::write_png(
        root.join(format!("JPEGImages/{id}.png")),
        &Image::new(20, 10, 3, 90),
    )
    .unwrap();
    let ann = VocAnnotation {
        filename: format!("{id}.png"),
        width: 20,
        height: 10,
        depth: 3,
        objects: vec![VocObject {
            name: "dog".into(),
            bndbox: [x, 2.0, x + 5.0, 8.0],
            difficult: false,
            truncated: false,
        }],
    };
    std::fs::create_dir_all(root.join("Annotations")).unwrap();
    std::fs::write(root.join(format!("Annotations/{id}.xml")), ann.to_xml()).unwrap();
}

fn ids(ds: &VocDataset) -> Vec<String> {
    ds.ids.clone()
}

#[test]
fn detection_folder_without_image_sets_lists_every_annotation() {
    let d = tempfile::tempdir().unwrap();
    for (id, x) in [("b", 3.0), ("a", 1.0), ("c", 7.0)] {
        write_image(d.path(), id, x);
    }
    std::fs::write(d.path().join("Annotations/notes.txt"), "not an annotation").unwrap();
    let ds = VocDataset::open(d.path(), "train", VocTask::Detection, None).unwrap();
    assert_eq!(ids(&ds), ["a", "b", "c"]);
    let s = ds.get(2).unwrap();
    assert_eq!(s.boxes, vec![[6.0, 1.0, 12.0, 8.0]]);
    assert_eq!(ds.class_names()[s.classes[0] as usize], "dog");

    // a Main list, when there is one, chooses the images
    std::fs::create_dir_all(d.path().join("ImageSets/Main")).unwrap();
    std::fs::write(d.path().join("ImageSets/Main/train.txt"), "c\nb\n").unwrap();
    let ds = VocDataset::open(d.path(), "train", VocTask::Detection, None).unwrap();
    assert_eq!(ids(&ds), ["c", "b"]);
    // a set that is not there is named, with the ones that are
    let e = VocDataset::open(d.path(), "val", VocTask::Detection, None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("ImageSets/Main") && e.contains("\"val\"") && e.contains("sets here: train"),
        "{e}"
    );
}

#[test]
fn segmentation_folder_without_image_sets_lists_every_label_map() {
    let d = tempfile::tempdir().unwrap();
    for (id, x) in [("x1", 1.0), ("x2", 3.0), ("x3", 5.0)] {
        write_image(d.path(), id, x);
    }
    // only two images have label maps
    for id in ["x3", "x1"] {
        let mut p = Plane::new(20, 10, 0);
        p.set(4, 4, 12);
        io::write_label_png(d.path().join(format!("SegmentationClass/{id}.png")), &p).unwrap();
    }
    // a detection list does not stand in for the segmentation one
    std::fs::create_dir_all(d.path().join("ImageSets/Main")).unwrap();
    std::fs::write(d.path().join("ImageSets/Main/train.txt"), "x2\n").unwrap();
    let ds = VocDataset::open(d.path(), "train", VocTask::Segmentation, None).unwrap();
    assert_eq!(ids(&ds), ["x1", "x3"]);
    let s = ds.get(1).unwrap();
    assert_eq!(s.label_map.as_ref().unwrap().get(4, 4), 12);
    assert_eq!(
        s.boxes.len(),
        1,
        "boxes come along where the annotation exists"
    );
}

#[test]
fn missing_folders_are_named_with_their_cause_once() {
    let d = tempfile::tempdir().unwrap();
    let e = VocDataset::open(d.path().join("nope"), "train", VocTask::Detection, None)
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(msg.contains("nope/Annotations"), "{msg}");
    assert_eq!(msg.matches("os error").count(), 1, "{msg}");
    // the cause is in the message, not repeated as a source (error chains print it once)
    assert!(std::error::Error::source(&e).is_none());
    // a folder with annotations but no label maps cannot be a segmentation set
    write_image(d.path(), "a", 1.0);
    let e = VocDataset::open(d.path(), "train", VocTask::Segmentation, None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("SegmentationClass"), "{e}");
}
