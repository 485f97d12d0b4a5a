//! SpineNet builds for every variant and yields levels 3-7 at the right strides and widths;
//! training mode runs backward through every block.
use candle_core::{DType, Device, Tensor, Var};
use pupil_backbones::spinenet::{SpineNet, SpineNetConfig};
use pupil_backbones::Backbone;
use pupil_nn::params::ParamStore;

#[test]
fn spinenet_49s_levels_and_backward() {
    let store = ParamStore::new(&Device::Cpu, DType::F32, 0);
    let cfg = SpineNetConfig {
        init_drop_connect_rate: 0.2,
        ..SpineNetConfig::variant("49s").unwrap()
    };
    let net = SpineNet::new(&store.root(), &cfg).unwrap();
    let levels = net.levels();
    assert_eq!(
        levels
            .iter()
            .map(|l| (l.level, l.stride, l.channels))
            .collect::<Vec<_>>(),
        vec![
            (3, 8, 128),
            (4, 16, 128),
            (5, 32, 128),
            (6, 64, 128),
            (7, 128, 128)
        ]
    );
    let x =
        Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 96, 80), &Device::Cpu).unwrap()).unwrap();
    let f = net.forward_t(x.as_tensor(), true).unwrap();
    for (level, h, w) in [(3, 12, 10), (4, 6, 5), (5, 3, 3), (6, 2, 2), (7, 1, 1)] {
        assert_eq!(
            f.get(level).unwrap().dims(),
            &[2, 128, h, w],
            "level {level}"
        );
    }
    let loss = f
        .maps
        .values()
        .map(|t| t.sqr().unwrap().mean_all().unwrap())
        .reduce(|a, b| (a + b).unwrap())
        .unwrap();
    let grads = loss.backward().unwrap();
    let g = grads.get(x.as_tensor()).expect("input gradient");
    assert!(
        g.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );
    let trained = store
        .trainable()
        .iter()
        .filter(|(_, v, _)| grads.get(v.as_tensor()).is_some())
        .count();
    assert_eq!(
        trained,
        store.trainable().len(),
        "every parameter gets a gradient"
    );
}

#[test]
fn spinenet_variants_build_with_expected_widths() {
    for (v, e) in [("49", 256), ("96", 256), ("143", 256), ("190", 512)] {
        let store = ParamStore::new(&Device::Cpu, DType::F32, 0);
        let net = SpineNet::new(&store.root(), &SpineNetConfig::variant(v).unwrap()).unwrap();
        assert!(net.levels().iter().all(|l| l.channels == e));
        eprintln!(
            "spinenet-{v}: {:.1}M backbone parameters",
            store.count(true) as f64 / 1e6
        );
    }
}
