//! `tokenizer.json` through the `tokenizers` crate (the Rust core of Hugging Face tokenizers), and the
//! gene-level WordLevel tokenizer of the harness's own small cell-sentence models.
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// End of text; also the start token of the small models and the pad id.
pub const EOS: &str = "<|endoftext|>";
/// Padding token (GPT-NeoX's id 1).
pub const PAD: &str = "<|padding|>";
/// Unknown gene of the small models.
pub const UNK: &str = "<unk>";

/// A loaded tokenizer and the file it came from.
pub struct Tok {
    pub path: PathBuf,
    pub inner: Tokenizer,
}

impl Tok {
    /// Reads `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::NotFound {
                path: path.into(),
                hint: " (the checkpoint's tokenizer.json)".into(),
            });
        }
        let inner = Tokenizer::from_file(path).map_err(|e| {
            Error::format(
                path,
                format!("not a tokenizers JSON file: {e}"),
                "use the tokenizer.json saved with the model (Hugging Face `tokenizers` format)",
            )
        })?;
        Ok(Tok {
            path: path.into(),
            inner,
        })
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of each text (special tokens as the tokenizer's post-processor adds them), in parallel.
    pub fn encode_batch(&self, texts: &[String]) -> Result<Vec<Vec<i64>>> {
        let enc = self
            .inner
            .encode_batch(texts.iter().map(|s| s.as_str()).collect::<Vec<_>>(), true)
            .map_err(|e| {
                Error::format(
                    &self.path,
                    format!("encoding failed: {e}"),
                    "check the tokenizer file",
                )
            })?;
        Ok(enc
            .iter()
            .map(|e| e.get_ids().iter().map(|&i| i as i64).collect())
            .collect())
    }

    /// For a gene-level tokenizer (one with `<unk>`): how many of the tokens of `texts` it reads as
    /// `<unk>`, of how many; `None` for a subword tokenizer (Pythia's BPE knows every word).
    pub fn unknown_tokens(&self, texts: &[String]) -> Result<Option<(usize, usize)>> {
        let Some(unk) = self.id(UNK) else {
            return Ok(None);
        };
        let specials: Vec<i64> = [EOS, PAD].iter().filter_map(|t| self.id(t)).collect();
        let ids = self.encode_batch(texts)?;
        let tokens = ids.iter().flatten().filter(|i| !specials.contains(i));
        let (mut n, mut u) = (0, 0);
        for &i in tokens {
            n += 1;
            u += usize::from(i == unk);
        }
        Ok(Some((u, n)))
    }

    /// Id of a token, if the vocabulary has it.
    pub fn id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(|i| i as i64)
    }
}

/// Builds a WordLevel tokenizer over gene words: ids 0 `<|endoftext|>` (prepended to every text, so
/// the first gene is predicted too), 1 `<|padding|>`, 2 `<unk>`, then `words` in the given order;
/// texts are split on whitespace.
pub fn gene_tokenizer(words: &[String]) -> Result<Tokenizer> {
    let mut vocab: HashMap<String, u32> = HashMap::new();
    for (i, s) in [EOS, PAD, UNK].iter().enumerate() {
        vocab.insert(s.to_string(), i as u32);
    }
    for w in words {
        let n = vocab.len() as u32;
        vocab.entry(w.clone()).or_insert(n);
    }
    let model = WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token(UNK.into())
        .build()
        .map_err(|e| Error::param("vocabulary", e.to_string()))?;
    let post = TemplateProcessing::builder()
        .try_single(format!("{EOS} $A"))
        .and_then(|b| {
            b.special_tokens(vec![(EOS, 0)])
                .build()
                .map_err(|e| e.to_string())
        })
        .map_err(|e| Error::param("tokenizer template", e))?;
    let mut tok = Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(WhitespaceSplit));
    tok.with_post_processor(Some(post));
    tok.add_special_tokens(vec![
        AddedToken::from(EOS, true),
        AddedToken::from(PAD, true),
        AddedToken::from(UNK, true),
    ])
    .map_err(|e| Error::param("tokenizer", e.to_string()))?;
    Ok(tok)
}
