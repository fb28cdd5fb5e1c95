//! Writes the seed corpus from real encoded messages:
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds -- fuzz/corpus`.
//! `decode/` gets every sample message's postcard encoding and its signed envelope body;
//! `envelope/` gets every sample message sealed for the wire. (The coordinator target's corpus
//! comes from fuzzing runs, minimized with `cargo fuzz cmin`.)

use std::path::PathBuf;

use rakis_fuzz::seeds::{sample_messages, sample_wire};

fn write(dir: &PathBuf, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    for (i, m) in sample_messages().iter().enumerate() {
        let bytes = postcard::to_allocvec(m).expect("sample messages encode");
        write(
            &root.join("decode"),
            &format!("seed-{i:02}-{}", m.kind()),
            &bytes,
        )?;
    }
    for (i, w) in sample_wire().iter().enumerate() {
        write(&root.join("envelope"), &format!("seed-{i:02}"), w)?;
        // The envelope alone, as the signed body encodes it.
        let opened = rakis_core::envelope::open(w, rakis_fuzz::NETWORK).expect("samples open");
        let body = postcard::to_allocvec(&opened.envelope).expect("envelopes encode");
        write(&root.join("decode"), &format!("seed-{i:02}-body"), &body)?;
    }
    Ok(())
}
