//! The Hub path for real: a loopback HTTP server serves a Hub-layout repository; hf-hub
//! downloads through HF_ENDPOINT into HF_HOME, and offline mode then reads the cache.
use candle_core::{DType, Device};
use pupil_backbones::hub;
use pupil_backbones::zoo::{build, BackboneConfig};
use pupil_nn::params::{LoadOptions, ParamStore};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn serve(listener: TcpListener, path: String, body: Vec<u8>, hits: Arc<AtomicUsize>) {
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut range = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                range = Some(v.trim().to_string());
            }
        }
        hits.fetch_add(1, Ordering::SeqCst);
        if target == "/__stop__" {
            return;
        }
        if target != path {
            let _ = s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            continue;
        }
        let n = body.len();
        let (start, end) = match range.as_deref().and_then(|r| r.split_once('-')) {
            Some((a, b)) => (
                a.parse().unwrap_or(0),
                if b.is_empty() {
                    n - 1
                } else {
                    b.parse().unwrap_or(n - 1)
                },
            ),
            None => (0, n - 1),
        };
        let head = format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{end}/{n}\r\nContent-Length: {}\r\nETag: \"0123456789abcdef\"\r\nX-Repo-Commit: 0123456789012345678901234567890123456789\r\nConnection: close\r\n\r\n",
            end + 1 - start
        );
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(&body[start..=end]);
    }
}

#[test]
fn hub_download_cache_and_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = BackboneConfig {
        width: Some(0.25),
        depth: Some(0.25),
        num_classes: 5,
        ..BackboneConfig::named("tf-efficientnet")
    };
    let src = ParamStore::new(&Device::Cpu, DType::F32, 11);
    build(&src.root(), &cfg).unwrap();
    let file = tmp.path().join("w.safetensors");
    src.save_safetensors(&file, &serde_json::json!({})).unwrap();
    let body = std::fs::read(&file).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let server = {
        let hits = hits.clone();
        std::thread::spawn(move || {
            serve(
                listener,
                "/pupil/tiny-effnet/resolve/main/model.safetensors".into(),
                body,
                hits,
            )
        })
    };
    std::env::set_var("HF_ENDPOINT", format!("http://{addr}"));
    std::env::set_var("HF_HOME", tmp.path().join("hf"));
    std::env::remove_var("HF_HUB_OFFLINE");

    let path = hub::resolve("hf:pupil/tiny-effnet").unwrap();
    assert!(
        path.starts_with(tmp.path().join("hf")),
        "{}",
        path.display()
    );
    let dst = ParamStore::new(&Device::Cpu, DType::F32, 99);
    build(&dst.root(), &cfg).unwrap();
    dst.load_safetensors(&path, &LoadOptions::strict()).unwrap();
    for (name, t) in src.tensors() {
        let d = (t - dst.get(&name).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0, "{name}");
    }
    assert!(hits.load(Ordering::SeqCst) >= 2);
    let missing = hub::resolve("hf:pupil/absent").unwrap_err().to_string();
    assert!(missing.contains("hf:pupil/absent"), "{missing}");

    // Offline: served from the cache without a request; an uncached repo is a clear error.
    let before = hits.load(Ordering::SeqCst);
    std::env::set_var("HF_HUB_OFFLINE", "1");
    assert_eq!(hub::resolve("hf:pupil/tiny-effnet").unwrap(), path);
    assert_eq!(hits.load(Ordering::SeqCst), before);
    let e = hub::resolve("hf:pupil/other").unwrap_err().to_string();
    assert!(
        e.contains("HF_HUB_OFFLINE") && e.contains("pupil/other"),
        "{e}"
    );

    let _ = std::net::TcpStream::connect(addr)
        .and_then(|mut s| s.write_all(b"GET /__stop__ HTTP/1.1\r\n\r\n"));
    server.join().unwrap();
}
