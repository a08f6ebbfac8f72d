//! Micro-benchmarks of config loading: parse + validate (`from_str`, no file I/O) of
//! the example configs shipped in `config/examples`:
//!
//! - `load/gateway_demo`: `tollgate_config::gateway::from_str` on `demo.yaml`;
//! - `load/sidecar_example`: `tollgate_config::sidecar::from_str` on `sidecar.yaml`.
//!
//! Each config is checked to load once before it is measured. The paths passed are
//! the files' real paths, so relative paths in them (the sidecar's identity files)
//! resolve as they would in production; validation does not read those files.
//!
//! Run: `cargo bench -p tollgate-config --bench load` (add `-- --quick` for a fast pass).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate_config::gateway::EnvOverrides;

const GATEWAY_DEMO: &str = include_str!("../examples/demo.yaml");
const SIDECAR_EXAMPLE: &str = include_str!("../examples/sidecar.yaml");

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn bench_load(c: &mut Criterion) {
    let env = EnvOverrides {
        zone: None,
        region: None,
    };
    let gateway_path = example("demo.yaml");
    let sidecar_path = example("sidecar.yaml");

    let gw = tollgate_config::gateway::from_str(&gateway_path, GATEWAY_DEMO, &env)
        .expect("demo.yaml loads");
    assert_eq!(gw.config.routes.len(), 3);
    let sc = tollgate_config::sidecar::from_str(&sidecar_path, SIDECAR_EXAMPLE)
        .expect("sidecar.yaml loads");
    assert_eq!(sc.config.dependencies.len(), 2);
    assert_eq!(
        sc.config.identity.cert,
        example("certs/tls.crt"),
        "relative to the file"
    );

    let mut g = c.benchmark_group("load");
    g.bench_function("gateway_demo", |b| {
        b.iter(|| {
            tollgate_config::gateway::from_str(
                black_box(&gateway_path),
                black_box(GATEWAY_DEMO),
                black_box(&env),
            )
        })
    });
    g.bench_function("sidecar_example", |b| {
        b.iter(|| {
            tollgate_config::sidecar::from_str(black_box(&sidecar_path), black_box(SIDECAR_EXAMPLE))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    targets = bench_load
}
criterion_main!(benches);
