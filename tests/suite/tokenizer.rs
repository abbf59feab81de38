//! The byte-level BPE tokenizer: lossless on arbitrary UTF-8, special tokens at 0..n, and a
//! tokenizer.json that Python's `tokenizers` loads and encodes identically.

use crate::common;

use gptlab::special;
use gptlab::tokenizer::Tokenizer;
use rand::{Rng, SeedableRng};

fn trained() -> (tempfile::TempDir, Tokenizer) {
    let dir = tempfile::tempdir().unwrap();
    let texts = ["the red circle is left of the blue square", "Q: What is 12 plus 30? A: 42", "stone -> enots"];
    let corpus: Vec<String> = (0..200).map(|i| format!("{} {i}", texts[i % 3])).collect();
    let tok = Tokenizer::train(corpus.iter(), 300, &dir.path().join("tokenizer.json")).unwrap();
    (dir, tok)
}

#[test]
fn special_tokens_have_the_first_ids() {
    let (_d, tok) = trained();
    for (i, s) in special::ALL.iter().enumerate() {
        assert_eq!(tok.token_to_id(s), Some(i as u32), "{s}");
    }
    assert_ne!(tok.eot(), tok.pad(), "pad must differ from EOS");
    assert!(tok.vocab_size() <= 300);
}

#[test]
fn encode_decode_is_lossless_on_arbitrary_utf8() {
    let (_d, tok) = trained();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut cases: Vec<String> = vec![
        String::new(),
        "  leading and trailing spaces  ".into(),
        "tabs\tand\nnewlines\r\n".into(),
        "émoji 🤖 and 中文 and \u{0} nul".into(),
        format!("specials {} inside {} text", special::EOT, special::IMAGE),
    ];
    for _ in 0..200 {
        let len = rng.random_range(0..40);
        cases.push((0..len).map(|_| rng.random::<char>()).collect());
    }
    for text in cases {
        let ids = tok.encode(&text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text, "ids {ids:?}");
    }
}

#[test]
fn python_tokenizers_loads_the_file_and_agrees() {
    let (dir, tok) = trained();
    let path = dir.path().join("tokenizer.json");
    let text = "the red circle 🤖 is left of <|endoftext|> 42";
    let script = format!(
        "import json, sys\nfrom tokenizers import Tokenizer\nt = Tokenizer.from_file(sys.argv[1])\nprint(json.dumps(t.encode({text:?}).ids))"
    );
    let out = common::run_python(&["-c", &script, path.to_str().unwrap()]);
    let py: Vec<u32> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(py, tok.encode(text).unwrap());
}
