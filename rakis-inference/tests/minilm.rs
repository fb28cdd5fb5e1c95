//! all-MiniLM-L6-v2 on candle against sentence-transformers (PyTorch) reference vectors.

mod common;

use rakis_core::{BinaryEmbedding, Embedder};
use rakis_inference::{CandleEmbedder, EmbedderConfig, ModelSource, Pooling, MINILM};

fn embedder() -> CandleEmbedder {
    CandleEmbedder::load(
        &ModelSource::local(common::minilm_dir()),
        EmbedderConfig::new(MINILM),
    )
    .unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn matches_the_pytorch_reference_vectors_and_bits() {
    let e = embedder();
    assert_eq!(e.pooling(), Pooling::Mean);
    assert_eq!(e.dead_dims(), &[127, 223, 319]);
    let fx = common::fixture("minilm_reference.json");
    let items = fx["items"].as_array().unwrap();
    assert!(items.len() >= 5);
    let sentences: Vec<String> = items
        .iter()
        .map(|i| i["sentence"].as_str().unwrap().to_string())
        .collect();
    // Batched on purpose (the reference was computed one by one): a batch changes no bit.
    let ours = e.embed_sync(&sentences).unwrap();
    let binary = e.embed_binary_sync(&sentences).unwrap();
    for (i, item) in items.iter().enumerate() {
        let ids: Vec<u32> = item["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            e.token_ids(&sentences[i]).unwrap(),
            ids,
            "token ids of {:?}",
            sentences[i]
        );
        let reference: Vec<f32> = item["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let c = cosine(&ours[i], &reference);
        assert!(c >= 0.9999, "cosine {c} for {:?}", sentences[i]);
        let mut ref_bits = BinaryEmbedding::quantize(&reference).unwrap();
        ref_bits.mask_dims(e.dead_dims()).unwrap();
        let d = binary[i].hamming(&ref_bits).unwrap();
        assert!(d <= 2, "{d} bits differ for {:?}", sentences[i]);
        for dead in e.dead_dims() {
            assert!(!binary[i].bit(*dead).unwrap());
        }
    }
}

/// The encoder lays a batch's texts end to end without padding and computes each text's rows
/// independently: a text's embedding is the same bits alone or in any batch.
#[test]
fn a_text_embeds_to_the_same_bits_alone_or_in_any_batch() {
    let texts: Vec<String> = [
        "a considerably longer sentence than every other one beside it in this small batch",
        "a medium sentence about the capital of France",
        "the cat sat",
        "rivers flow into the sea after long journeys through the valleys",
        "short",
    ]
    .map(String::from)
    .to_vec();
    let alone: Vec<Vec<f32>> = {
        let e = embedder();
        texts
            .iter()
            .map(|t| e.embed_sync(std::slice::from_ref(t)).unwrap().remove(0))
            .collect()
    };
    for batch_size in [1, 2, 32] {
        let e = CandleEmbedder::load(
            &ModelSource::local(common::minilm_dir()),
            EmbedderConfig {
                batch_size,
                ..EmbedderConfig::new(MINILM)
            },
        )
        .unwrap();
        let batched = e.embed_sync(&texts).unwrap();
        // In the caller's order, each exactly as alone.
        assert_eq!(batched, alone, "batches of {batch_size}");
        assert!(e.embed_sync(&[]).unwrap().is_empty());
    }
}

#[test]
fn paraphrases_are_nearer_than_unrelated_sentences() {
    let e = embedder();
    // (anchor, paraphrase, unrelated)
    let triples = [
        (
            "The capital of France is Paris.",
            "Paris is France's capital city.",
            "I like to eat apples in the morning.",
        ),
        (
            "The cat is sleeping on the sofa.",
            "A cat naps on the couch.",
            "Interest rates rose again this quarter.",
        ),
        (
            "Water boils at 100 degrees Celsius at sea level.",
            "At sea level, water reaches its boiling point at 100 °C.",
            "The football match ended in a draw.",
        ),
        (
            "He bought a new car yesterday.",
            "Yesterday he purchased a new automobile.",
            "Photosynthesis converts light into chemical energy.",
        ),
        (
            "I cannot answer that question.",
            "Sorry, I am unable to respond to that.",
            "The Eiffel Tower is in Paris.",
        ),
        (
            "The meeting was moved to Friday.",
            "They rescheduled the meeting for Friday.",
            "Mount Everest is the highest mountain on Earth.",
        ),
    ];
    let mut worst_gap = i64::MAX;
    for (a, p, u) in triples {
        let b = e
            .embed_binary_sync(&[a.to_string(), p.to_string(), u.to_string()])
            .unwrap();
        let dp = b[0].hamming(&b[1]).unwrap() as i64;
        let du = b[0].hamming(&b[2]).unwrap() as i64;
        assert!(dp < du, "{a:?}: paraphrase at {dp} bits, unrelated at {du}");
        worst_gap = worst_gap.min(du - dp);
    }
    assert!(worst_gap > 0);
}

#[tokio::test]
async fn the_embedder_trait_gives_the_masked_binary_embeddings() {
    let e = embedder();
    assert_eq!(Embedder::model(&e), MINILM);
    assert_eq!(Embedder::dim(&e), 384);
    let texts = vec!["Paris is the capital of France.".to_string()];
    let via_trait = Embedder::embed_binary(&e, texts.clone()).await.unwrap();
    assert_eq!(via_trait, e.embed_binary_sync(&texts).unwrap());
    assert!(Embedder::embed(&e, vec![]).await.is_err());
}

#[test]
fn missing_model_files_give_typed_errors() {
    let dir = std::env::temp_dir().join(format!("rakis-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err =
        CandleEmbedder::load(&ModelSource::local(&dir), EmbedderConfig::new(MINILM)).unwrap_err();
    assert!(
        matches!(err, rakis_inference::InferenceError::MissingFile(_)),
        "{err}"
    );
    std::fs::write(dir.join("config.json"), "{not json").unwrap();
    let err =
        CandleEmbedder::load(&ModelSource::local(&dir), EmbedderConfig::new(MINILM)).unwrap_err();
    assert!(
        matches!(err, rakis_inference::InferenceError::Config { .. }),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
