//! The CLIP tokenizers built from vocab.json + merges.txt (the tiny fixture ships no
//! tokenizer.json, as real SDXL repos do) against the ids transformers' CLIPTokenizer gives
//! with `padding="max_length", max_length=77, truncation=True`
//! (tests/fixtures/pipeline_refs/tokenizer_cases.json, made by tools/fixtures/make_pipeline_refs.py).

mod common;

use sdxl_backend::pipeline::tokenizer::ClipTokenizer;
use serde_json::Value;

#[test]
fn ids_equal_transformers_for_every_case_and_both_tokenizers() {
    let cases: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture("pipeline_refs/tokenizer_cases.json")).unwrap(),
    )
    .unwrap();
    for (key, dir) in [
        ("tokenizer", "tiny-sdxl/tokenizer"),
        ("tokenizer_2", "tiny-sdxl/tokenizer_2"),
    ] {
        let directory = common::fixture(dir);
        assert!(
            !directory.join("tokenizer.json").exists(),
            "the fixture has only vocab.json + merges.txt"
        );
        let tokenizer = ClipTokenizer::load(&directory).unwrap();
        for case in cases["cases"].as_array().unwrap() {
            let prompt = case["prompt"].as_str().unwrap();
            let expected: Vec<i64> = case[key]["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            let ours = tokenizer.encode(prompt).unwrap();
            assert_eq!(ours.ids, expected, "{key}: {prompt:?}");
            let untruncated = case[key]["untruncated_len"].as_u64().unwrap() as usize;
            assert_eq!(
                ours.truncated_text.is_empty(),
                untruncated <= 77,
                "{key}: truncation of {prompt:?}"
            );
        }
    }
}
