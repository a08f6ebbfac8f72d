//! `tollgate_config::gateway::from_str` on arbitrary text: any input may be refused
//! with a `ConfigError`, none may panic. The error is also rendered, since that is
//! what an operator sees (positions, field paths, snippets of the source).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tollgate_config::gateway::{from_str, EnvOverrides};

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    match from_str(Path::new("fuzz.yaml"), source, &EnvOverrides::default()) {
        Ok(loaded) => {
            let _ = format!("{loaded:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
