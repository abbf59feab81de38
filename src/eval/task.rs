//! Task files in lm-evaluation-harness's YAML: the documented subset of its keys, Jinja templates
//! rendered the way lm-eval renders them, and the documents of each split read from JSONL.
//!
//! A field name alone stands for that field; anything else is a Jinja template with strict
//! undefined variables (lm-eval's `StrictUndefined`), so a template naming a field the documents
//! lack is an error at load time, not an empty prompt at scoring time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Keys gptlab reads, in lm-eval's spelling.
const SUPPORTED_KEYS: [&str; 22] = [
    "task",
    "dataset_path",
    "dataset_kwargs",
    "test_split",
    "validation_split",
    "training_split",
    "fewshot_split",
    "output_type",
    "doc_to_text",
    "doc_to_target",
    "doc_to_choice",
    "doc_to_image",
    "description",
    "target_delimiter",
    "fewshot_delimiter",
    "num_fewshot",
    "fewshot_config",
    "generation_kwargs",
    "metric_list",
    "filter_list",
    "metadata",
    "tag",
];

/// Keys lm-eval uses for bookkeeping that do not change a score; accepted and ignored.
const IGNORED_KEYS: [&str; 3] = ["should_decontaminate", "doc_to_decontamination_query", "dataset_name"];

/// lm-eval's four request types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputType {
    MultipleChoice,
    GenerateUntil,
    Loglikelihood,
    LoglikelihoodRolling,
}

impl OutputType {
    /// lm-eval's name for it.
    pub fn name(self) -> &'static str {
        match self {
            OutputType::MultipleChoice => "multiple_choice",
            OutputType::GenerateUntil => "generate_until",
            OutputType::Loglikelihood => "loglikelihood",
            OutputType::LoglikelihoodRolling => "loglikelihood_rolling",
        }
    }
}

/// A template key: a field name or Jinja template, or (for `doc_to_target`) a literal index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TemplateSpec {
    Index(u64),
    Text(String),
}

/// `doc_to_choice`: a field or template that gives a list, or a literal list (or map) of templates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChoiceSpec {
    Template(String),
    List(Vec<String>),
    Map(BTreeMap<String, String>),
}

/// `dataset_kwargs.data_files`: one file (the `train` split), or files by split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DataFiles {
    One(String),
    BySplit(BTreeMap<String, OneOrMany>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn paths(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(p) => vec![p.as_str()],
            OneOrMany::Many(ps) => ps.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetKwargs {
    pub data_files: DataFiles,
}

/// `fewshot_config`: how shots are drawn and, where they differ from the query's, how they are
/// written (lm-eval's `FewshotConfig` overrides).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FewshotConfig {
    /// `default` (a random draw) or `first_n` (the split's first documents, in order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_to_text: Option<TemplateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_to_target: Option<TemplateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_delimiter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fewshot_delimiter: Option<String>,
}

/// `generation_kwargs`: greedy decoding until a stop string, as lm-eval runs it by default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationKwargs {
    #[serde(default)]
    pub until: Option<OneOrMany>,
    #[serde(default = "default_max_gen_toks")]
    pub max_gen_toks: usize,
    #[serde(default)]
    pub do_sample: bool,
    #[serde(default)]
    pub temperature: f64,
}

fn default_max_gen_toks() -> usize {
    256
}

/// One entry of `filter_list`: a named pipeline of steps applied to each generation before its
/// metrics (lm-eval's filters; results are keyed `"<metric>,<name>"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterPipeline {
    pub name: String,
    pub filter: Vec<FilterStep>,
}

/// One filter step: `regex` (lm-eval's `RegexFilter`: the `group_select`-th match, its first
/// non-empty group when the pattern has groups, stripped; `fallback` when nothing matches),
/// `take_first`, `lowercase` or `uppercase`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterStep {
    pub function: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_select: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// The filter functions gptlab applies.
pub const FILTER_FUNCTIONS: [&str; 4] = ["regex", "take_first", "lowercase", "uppercase"];

/// One entry of `metric_list`, with `exact_match`'s normalisation options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub higher_is_better: Option<bool>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_case: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_punctuation: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_numbers: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regexes_to_ignore: Vec<String>,
}

impl MetricSpec {
    /// The metric with lm-eval's defaults (no normalisation).
    pub fn named(metric: &str) -> Self {
        MetricSpec {
            metric: metric.to_string(),
            aggregation: None,
            higher_is_better: None,
            ignore_case: false,
            ignore_punctuation: false,
            ignore_numbers: false,
            regexes_to_ignore: Vec::new(),
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The task file, with lm-eval's defaults filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskConfig {
    pub task: String,
    #[serde(default = "default_dataset_path")]
    pub dataset_path: String,
    pub dataset_kwargs: DatasetKwargs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_split: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_split: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_split: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fewshot_split: Option<String>,
    #[serde(default = "default_output_type")]
    pub output_type: OutputType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_to_text: Option<TemplateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_to_target: Option<TemplateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_to_choice: Option<ChoiceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_to_image: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_target_delimiter")]
    pub target_delimiter: String,
    #[serde(default = "default_fewshot_delimiter")]
    pub fewshot_delimiter: String,
    #[serde(default)]
    pub num_fewshot: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fewshot_config: Option<FewshotConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_kwargs: Option<GenerationKwargs>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_list: Vec<MetricSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter_list: Vec<FilterPipeline>,
    /// Free-form in lm-eval; gptlab reads `version`, and `unconditional_context` (GPT-3's
    /// normalisation context for `acc_mutual_info`; lm-eval's empty context when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<Value>,
}

fn default_dataset_path() -> String {
    "json".into()
}
fn default_output_type() -> OutputType {
    OutputType::GenerateUntil
}
fn default_target_delimiter() -> String {
    " ".into()
}
fn default_fewshot_delimiter() -> String {
    "\n\n".into()
}

impl TaskConfig {
    /// Parses a task file's text; errors name the key at fault.
    pub fn from_yaml(text: &str) -> Result<Self> {
        let raw: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| anyhow!("not valid YAML: {e}"))?;
        let map = raw.as_mapping().context("expected a mapping of lm-eval task keys")?;
        for key in map.keys() {
            let key = key.as_str().context("a key is not a string")?;
            if IGNORED_KEYS.contains(&key) {
                continue;
            }
            ensure!(
                SUPPORTED_KEYS.contains(&key),
                "key `{key}` is not supported (gptlab reads {})",
                SUPPORTED_KEYS.join(", ")
            );
        }
        let cfg: TaskConfig = serde_yaml_ng::from_value(raw.clone()).map_err(|e| match first_bad_key(&raw) {
            Some(key) => anyhow!("key `{key}`: {e}"),
            None => anyhow!("{e}"),
        })?;
        if let Some(Value::Object(meta)) = &cfg.metadata {
            if let Some(v) = meta.get("unconditional_context") {
                ensure!(v.is_string(), "key `metadata.unconditional_context` must be a string");
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects settings lm-eval would reject or gptlab cannot honour.
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.task.trim().is_empty(), "key `task` must name the task");
        ensure!(
            matches!(self.dataset_path.as_str(), "json" | "jsonl"),
            "key `dataset_path`: only `json` (JSONL files named in dataset_kwargs.data_files) is supported, got {:?}",
            self.dataset_path
        );
        ensure!(
            self.test_split.is_some() || self.validation_split.is_some(),
            "key `test_split`: name the split to score (or `validation_split`)"
        );
        match self.output_type {
            OutputType::MultipleChoice => {
                ensure!(self.doc_to_choice.is_some(), "key `doc_to_choice` is required for multiple_choice");
                ensure!(self.doc_to_target.is_some(), "key `doc_to_target` is required for multiple_choice");
            }
            OutputType::LoglikelihoodRolling => {
                ensure!(self.doc_to_target.is_some(), "key `doc_to_target` gives the text to score; it is required")
            }
            OutputType::GenerateUntil | OutputType::Loglikelihood => {
                ensure!(self.doc_to_target.is_some(), "key `doc_to_target` is required")
            }
        }
        if let Some(g) = &self.generation_kwargs {
            ensure!(
                !g.do_sample && g.temperature == 0.0,
                "key `generation_kwargs`: gptlab decodes greedily (do_sample: false, temperature: 0)"
            );
            ensure!(g.max_gen_toks > 0, "key `generation_kwargs.max_gen_toks` must be positive");
        }
        if let Some(sampler) = self.fewshot_config.as_ref().and_then(|f| f.sampler.as_deref()) {
            ensure!(
                matches!(sampler, "default" | "first_n"),
                "key `fewshot_config.sampler`: `default` or `first_n`, got {sampler:?}"
            );
        }
        if !self.filter_list.is_empty() {
            ensure!(
                self.output_type == OutputType::GenerateUntil,
                "key `filter_list`: filters apply to generate_until tasks only"
            );
        }
        for (i, p) in self.filter_list.iter().enumerate() {
            ensure!(!p.name.trim().is_empty(), "key `filter_list`: pipeline {} has no name", i + 1);
            ensure!(
                !self.filter_list[..i].iter().any(|q| q.name == p.name),
                "key `filter_list`: the name {:?} is given twice",
                p.name
            );
            p.compile()?;
        }
        for m in &self.metric_list {
            let allowed = metrics_for(self.output_type);
            ensure!(
                allowed.contains(&m.metric.as_str()),
                "key `metric_list`: metric `{}` does not apply to {} (choose from {})",
                m.metric,
                self.output_type.name(),
                allowed.join(", ")
            );
            for re in &m.regexes_to_ignore {
                regex::Regex::new(re).map_err(|e| anyhow!("key `metric_list.regexes_to_ignore`: {}", one_line(&e)))?;
            }
        }
        Ok(())
    }

    /// The split scored: `test_split`, else `validation_split` (lm-eval's order).
    pub fn eval_split(&self) -> &str {
        self.test_split.as_deref().or(self.validation_split.as_deref()).expect("validated")
    }

    /// Where shots come from: `fewshot_split`, else training, validation, test (lm-eval's order).
    pub fn shot_split(&self) -> &str {
        self.fewshot_split
            .as_deref()
            .or(self.training_split.as_deref())
            .or(self.validation_split.as_deref())
            .unwrap_or_else(|| self.eval_split())
    }

    /// The stop strings: `generation_kwargs.until`, else the few-shot delimiter (lm-eval's default).
    pub fn until(&self) -> Vec<String> {
        match self.generation_kwargs.as_ref().and_then(|g| g.until.as_ref()) {
            Some(u) => u.paths().into_iter().map(String::from).collect(),
            None => vec![self.fewshot_delimiter.clone()],
        }
    }

    pub fn max_gen_toks(&self) -> usize {
        self.generation_kwargs.as_ref().map_or_else(default_max_gen_toks, |g| g.max_gen_toks)
    }

    /// The metrics reported: `metric_list`, else lm-eval's defaults for the output type.
    pub fn metrics(&self) -> Vec<MetricSpec> {
        if !self.metric_list.is_empty() {
            return self.metric_list.clone();
        }
        let names: &[&str] = match self.output_type {
            OutputType::MultipleChoice => &["acc", "acc_norm"],
            OutputType::GenerateUntil => &["exact_match"],
            OutputType::Loglikelihood => &["perplexity", "acc"],
            OutputType::LoglikelihoodRolling => &["word_perplexity", "byte_perplexity", "bits_per_byte"],
        };
        names.iter().map(|m| MetricSpec::named(m)).collect()
    }

    /// `metadata.unconditional_context`, the context `acc_mutual_info` divides by.
    pub fn unconditional_context(&self) -> &str {
        self.metadata.as_ref().and_then(|m| m.get("unconditional_context")).and_then(Value::as_str).unwrap_or("")
    }

    /// `metadata.steps` and `metadata.series`: where the task stands on a steps axis (the
    /// chain-of-thought probe's digit columns) and which line it belongs to ("direct",
    /// "scratchpad"); the report plots the metric against steps per series.
    pub fn steps(&self) -> Option<(f64, String)> {
        let meta = self.metadata.as_ref()?;
        let steps = meta.get("steps")?.as_f64()?;
        let series = meta.get("series").and_then(Value::as_str).unwrap_or("all");
        Some((steps, series.to_string()))
    }

    pub fn version(&self) -> Value {
        self.metadata.as_ref().and_then(|m| m.get("version")).cloned().unwrap_or(Value::from(1.0))
    }
}

/// lm-eval's default `regex_pattern` (GSM8K's final answer).
pub const DEFAULT_REGEX: &str = r"#### (\-?[0-9\.\,]+)";

impl FilterPipeline {
    /// The pipeline ready to run, its regexes compiled once (errors name the key).
    pub fn compile(&self) -> Result<CompiledFilter> {
        let steps = self
            .filter
            .iter()
            .map(|step| {
                Ok(match step.function.as_str() {
                    "lowercase" => Step::Lowercase,
                    "uppercase" => Step::Uppercase,
                    "take_first" => Step::TakeFirst,
                    "regex" => Step::Regex {
                        re: regex::Regex::new(step.regex_pattern.as_deref().unwrap_or(DEFAULT_REGEX))
                            .map_err(|e| anyhow!("key `filter_list.regex_pattern`: {}", one_line(&e)))?,
                        select: step.group_select.unwrap_or(0),
                        fallback: step.fallback.clone().unwrap_or_else(|| "[invalid]".into()),
                    },
                    other => bail!(
                        "key `filter_list`: function `{other}` is not supported (choose from {})",
                        FILTER_FUNCTIONS.join(", ")
                    ),
                })
            })
            .collect::<Result<_>>()?;
        Ok(CompiledFilter { name: self.name.clone(), steps })
    }
}

/// A `filter_list` pipeline, compiled.
pub struct CompiledFilter {
    pub name: String,
    steps: Vec<Step>,
}

enum Step {
    Lowercase,
    Uppercase,
    /// One generation per request here, so the first is the only one.
    TakeFirst,
    Regex {
        re: regex::Regex,
        select: i64,
        fallback: String,
    },
}

impl CompiledFilter {
    /// The generation after every step.
    pub fn apply(&self, text: &str) -> String {
        self.steps.iter().fold(text.to_string(), |t, step| match step {
            Step::Lowercase => t.to_lowercase(),
            Step::Uppercase => t.to_uppercase(),
            Step::TakeFirst => t,
            Step::Regex { re, select, fallback } => {
                // Python's findall: the whole match without groups, the group with one, and the
                // first non-empty group with several (none: the fallback).
                let matches: Vec<Option<String>> = re
                    .captures_iter(&t)
                    .map(|c| match c.len() {
                        1 => Some(c[0].to_string()),
                        2 => Some(c.get(1).map_or("", |m| m.as_str()).to_string()),
                        _ => (1..c.len())
                            .filter_map(|g| c.get(g))
                            .map(|m| m.as_str())
                            .find(|m| !m.is_empty())
                            .map(String::from),
                    })
                    .collect();
                let index = if *select < 0 { matches.len() as i64 + select } else { *select };
                match usize::try_from(index).ok().and_then(|i| matches.get(i)) {
                    Some(Some(m)) => m.trim().to_string(),
                    _ => fallback.clone(),
                }
            }
        })
    }
}

/// The metrics each output type can report.
pub fn metrics_for(output: OutputType) -> &'static [&'static str] {
    match output {
        OutputType::MultipleChoice => &["acc", "acc_norm", "acc_bytes", "acc_mutual_info", "ece"],
        OutputType::GenerateUntil => &["exact_match"],
        OutputType::Loglikelihood => &["perplexity", "acc"],
        OutputType::LoglikelihoodRolling => &["word_perplexity", "byte_perplexity", "bits_per_byte"],
    }
}

/// The first top-level key whose value alone fails to deserialise, so an error can name it.
fn first_bad_key(raw: &serde_yaml_ng::Value) -> Option<String> {
    let map = raw.as_mapping()?;
    let defaults = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(
        "task: t\ndataset_kwargs: {data_files: {test: x}}\ntest_split: test\n",
    )
    .ok()?;
    for (k, v) in map {
        let mut probe = defaults.as_mapping()?.clone();
        probe.insert(k.clone(), v.clone());
        if serde_yaml_ng::from_value::<TaskConfig>(serde_yaml_ng::Value::Mapping(probe)).is_err() {
            return k.as_str().map(String::from);
        }
    }
    None
}

/// What `doc_to_target` gives: text, or an index into the choices.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Text(String),
    Index(usize),
}

/// A task ready to run: its configuration, its documents, its compiled templates.
pub struct Task {
    pub cfg: TaskConfig,
    /// The YAML file it came from; `None` for a built-in task.
    pub source: Option<PathBuf>,
    pub docs: Vec<Value>,
    pub shot_docs: Vec<Value>,
    /// Whether shots come from the scored split itself (then a document is never its own shot).
    pub same_split: bool,
    env: Environment<'static>,
}

impl Task {
    /// Reads a task file and its data files (paths relative to the task file), and renders every
    /// template on every document once, so that nothing fails after scoring has started.
    pub fn from_file(path: &Path) -> Result<Task> {
        let at = path.display();
        let text = std::fs::read_to_string(path).with_context(|| format!("reading task file {at}"))?;
        let cfg = TaskConfig::from_yaml(&text).with_context(|| format!("task file {at}"))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let read = |split: &str| -> Result<Vec<Value>> {
            let files = match &cfg.dataset_kwargs.data_files {
                DataFiles::One(p) if split == "train" => vec![p.as_str()],
                DataFiles::One(_) => Vec::new(),
                DataFiles::BySplit(m) => m.get(split).map(OneOrMany::paths).unwrap_or_default(),
            };
            ensure!(!files.is_empty(), "key `dataset_kwargs.data_files` has no file for split `{split}`");
            let mut docs = Vec::new();
            for f in files {
                let file = dir.join(f);
                ensure!(file.is_file(), "key `dataset_kwargs.data_files.{split}`: {} does not exist", file.display());
                docs.extend(crate::jsonl::read_jsonl(&file)?);
            }
            Ok(docs)
        };
        let docs = read(cfg.eval_split()).with_context(|| format!("task file {at}"))?;
        let same_split = cfg.shot_split() == cfg.eval_split();
        let shot_docs =
            if same_split { Vec::new() } else { read(cfg.shot_split()).with_context(|| format!("task file {at}"))? };
        Task::new(cfg, Some(path.to_path_buf()), docs, shot_docs, same_split)
    }

    /// A task from a configuration and documents already in memory (the built-in tasks).
    pub fn new(
        cfg: TaskConfig,
        source: Option<PathBuf>,
        docs: Vec<Value>,
        shot_docs: Vec<Value>,
        same_split: bool,
    ) -> Result<Task> {
        // Built in code rather than read from YAML, the config is checked here all the same.
        cfg.validate()?;
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder().keep_trailing_newline(true).build().expect("default delimiters"),
        );
        env.add_filter("regex_replace", regex_replace);
        let task = Task { cfg, source, docs, shot_docs, same_split, env };
        task.check().map_err(|e| match &task.source {
            Some(p) => anyhow!("task file {}: {e:#}", p.display()),
            None => anyhow!("task {}: {e:#}", task.cfg.task),
        })?;
        Ok(task)
    }

    pub fn name(&self) -> &str {
        &self.cfg.task
    }

    /// The documents shots are drawn from.
    pub fn shots(&self) -> &[Value] {
        if self.same_split {
            &self.docs
        } else {
            &self.shot_docs
        }
    }

    fn check(&self) -> Result<()> {
        ensure!(!self.docs.is_empty(), "split `{}` has no documents", self.cfg.eval_split());
        let shots: Vec<(&str, &Value)> = self.shots().iter().map(|d| ("few-shot", d)).collect();
        for (i, (split, doc)) in self.docs.iter().map(|d| ("test", d)).chain(shots).enumerate() {
            let n = if split == "test" { i + 1 } else { i + 1 - self.docs.len() };
            let at = || format!("{split} document {n}");
            ensure!(doc.is_object(), "{}: expected a JSON object", at());
            self.text(doc).with_context(at)?;
            self.description(doc).with_context(at)?;
            let target = self.target(doc).with_context(at)?;
            if self.cfg.doc_to_choice.is_some() {
                let choices = self.choices(doc).with_context(at)?;
                ensure!(!choices.is_empty(), "{}: key `doc_to_choice` gave no choices", at());
                match &target {
                    Target::Index(i) => ensure!(
                        *i < choices.len(),
                        "{}: key `doc_to_target` gives index {i}, but there are {} choices",
                        at(),
                        choices.len()
                    ),
                    Target::Text(t) if self.cfg.output_type == OutputType::MultipleChoice => ensure!(
                        choices.contains(t),
                        "{}: key `doc_to_target` gives {t:?}, which is not among the choices {choices:?}",
                        at()
                    ),
                    Target::Text(_) => {}
                }
            }
            for image in self.images(doc).with_context(at)? {
                let file = self.image_root().join(&image);
                ensure!(file.is_file(), "{}: key `doc_to_image`: image {} does not exist", at(), file.display());
            }
            if split == "few-shot" || self.same_split {
                self.shot(doc).with_context(at)?;
            }
        }
        Ok(())
    }

    /// Evaluates a Jinja template against a document, as a value: `{{ expr }}` alone gives the
    /// expression's value (a list stays a list), anything else the rendered string.
    fn eval(&self, key: &str, template: &str, doc: &Value) -> Result<Value> {
        if let Some(field) = doc.get(template) {
            return Ok(field.clone());
        }
        let ctx = minijinja::Value::from(minijinja::value::Serde(doc));
        // Only a template that is one expression and nothing else, not even a space, is a value.
        let single = template
            .strip_prefix("{{")
            .and_then(|t| t.strip_suffix("}}"))
            .filter(|inner| !inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%"));
        if let Some(expr) = single {
            let value = self
                .env
                .compile_expression(expr)
                .and_then(|e| e.eval(&ctx))
                .map_err(|e| anyhow!("key `{key}`: {}", jinja_error(&e)))?;
            ensure!(!value.is_undefined(), "key `{key}`: `{}` is undefined for this document", expr.trim());
            return serde_json::to_value(&value).map_err(|e| anyhow!("key `{key}`: {e}"));
        }
        let text = self.env.render_str(template, &ctx).map_err(|e| anyhow!("key `{key}`: {}", jinja_error(&e)))?;
        Ok(Value::String(text))
    }

    fn render(&self, key: &str, template: &str, doc: &Value) -> Result<String> {
        Ok(as_text(&self.eval(key, template, doc)?))
    }

    /// The query, before the target delimiter.
    pub fn text(&self, doc: &Value) -> Result<String> {
        match &self.cfg.doc_to_text {
            None => Ok(String::new()),
            Some(TemplateSpec::Text(t)) => self.render("doc_to_text", t, doc),
            Some(TemplateSpec::Index(i)) => Ok(i.to_string()),
        }
    }

    pub fn description(&self, doc: &Value) -> Result<String> {
        if self.cfg.description.is_empty() {
            return Ok(String::new());
        }
        self.render("description", &self.cfg.description, doc)
    }

    /// The gold answer; a number indexes the choices when there are choices (lm-eval's rule).
    pub fn target(&self, doc: &Value) -> Result<Target> {
        let value = match self.cfg.doc_to_target.as_ref().context("key `doc_to_target` is missing")? {
            TemplateSpec::Index(i) => return Ok(Target::Index(*i as usize)),
            TemplateSpec::Text(t) => self.eval("doc_to_target", t, doc)?,
        };
        let has_choices = self.cfg.doc_to_choice.is_some();
        match value {
            Value::Number(n) if has_choices => {
                let i = n.as_u64().with_context(|| format!("key `doc_to_target`: {n} is not a choice index"))?;
                Ok(Target::Index(i as usize))
            }
            Value::String(s) if has_choices && !s.is_empty() && s.trim().chars().all(|c| c.is_ascii_digit()) => {
                Ok(Target::Index(s.trim().parse()?))
            }
            Value::Array(_) | Value::Object(_) => {
                bail!("key `doc_to_target` gives {value}; gptlab needs one text or one index")
            }
            other => Ok(Target::Text(as_text(&other))),
        }
    }

    /// The choices of a multiple-choice document, in order.
    pub fn choices(&self, doc: &Value) -> Result<Vec<String>> {
        match self.cfg.doc_to_choice.as_ref().context("key `doc_to_choice` is missing")? {
            ChoiceSpec::List(items) => items.iter().map(|t| self.render("doc_to_choice", t, doc)).collect(),
            ChoiceSpec::Map(items) => items.values().map(|t| self.render("doc_to_choice", t, doc)).collect(),
            ChoiceSpec::Template(t) => match self.eval("doc_to_choice", t, doc)? {
                Value::Array(items) => Ok(items.iter().map(as_text).collect()),
                Value::String(s) => {
                    parse_list_literal(&s).with_context(|| format!("key `doc_to_choice` must give a list, got {s:?}"))
                }
                other => bail!("key `doc_to_choice` must give a list, got {other}"),
            },
        }
    }

    /// The target as the text a shot shows: the chosen choice for an index.
    pub fn target_text(&self, doc: &Value) -> Result<String> {
        match self.target(doc)? {
            Target::Text(t) => Ok(t),
            Target::Index(i) if self.cfg.doc_to_choice.is_some() => {
                self.choices(doc)?.get(i).cloned().with_context(|| format!("key `doc_to_target`: no choice {i}"))
            }
            Target::Index(i) => Ok(i.to_string()),
        }
    }

    fn fewshot(&self) -> FewshotConfig {
        self.cfg.fewshot_config.clone().unwrap_or_default()
    }

    /// Whether shots are the split's first documents rather than a random draw.
    pub fn first_n(&self) -> bool {
        self.fewshot().sampler.as_deref() == Some("first_n")
    }

    /// A shot as the prompt shows it: `text + target_delimiter + target + fewshot_delimiter`,
    /// each part from `fewshot_config` where it overrides the task's.
    pub fn shot(&self, doc: &Value) -> Result<String> {
        let f = self.fewshot();
        let mut shot = match &f.doc_to_text {
            Some(TemplateSpec::Text(t)) => self.render("fewshot_config.doc_to_text", t, doc)?,
            Some(TemplateSpec::Index(i)) => i.to_string(),
            None => self.text(doc)?,
        };
        let target = match &f.doc_to_target {
            Some(TemplateSpec::Text(t)) => self.render("fewshot_config.doc_to_target", t, doc)?,
            Some(TemplateSpec::Index(i)) => i.to_string(),
            None => self.target_text(doc)?,
        };
        if !target.is_empty() {
            shot.push_str(f.target_delimiter.as_deref().unwrap_or(&self.cfg.target_delimiter));
            shot.push_str(&target);
        }
        shot.push_str(f.fewshot_delimiter.as_deref().unwrap_or(&self.cfg.fewshot_delimiter));
        Ok(shot)
    }

    /// The images of a multimodal document, as given (paths relative to the task file).
    pub fn images(&self, doc: &Value) -> Result<Vec<String>> {
        let Some(t) = &self.cfg.doc_to_image else { return Ok(Vec::new()) };
        match self.eval("doc_to_image", t, doc)? {
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(String::from).context("key `doc_to_image` must give image paths"))
                .collect(),
            Value::String(s) if s.is_empty() => Ok(Vec::new()),
            Value::String(s) => Ok(parse_list_literal(&s).unwrap_or_else(|_| vec![s])),
            other => bail!("key `doc_to_image` must give a path or a list of paths, got {other}"),
        }
    }

    /// Where a document's image paths are relative to.
    pub fn image_root(&self) -> PathBuf {
        self.source.as_deref().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default()
    }
}

/// A JSON value as prompt text: strings as they are, anything else as JSON.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A rendered list, `["a", "b"]` or Python's `['a', 'b']`.
fn parse_list_literal(s: &str) -> Result<Vec<String>> {
    let s = s.trim();
    ensure!(s.starts_with('[') && s.ends_with(']'), "not a list");
    if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(s) {
        return Ok(items.iter().map(as_text).collect());
    }
    let inner = &s[1..s.len() - 1];
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | ',' => continue,
            '\'' | '"' => {
                let mut item = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => item.extend(chars.next()),
                        Some(q) if q == c => break,
                        Some(ch) => item.push(ch),
                        None => bail!("unterminated string"),
                    }
                }
                out.push(item);
            }
            _ => bail!("not a list of strings"),
        }
    }
    Ok(out)
}

/// lm-eval's one custom Jinja filter: `re.sub(pattern, repl, string, count)` (0 = every match).
fn regex_replace(s: String, pattern: String, repl: String, count: Option<usize>) -> Result<String, minijinja::Error> {
    let re = regex::Regex::new(&pattern).map_err(|e| {
        minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, format!("regex_replace: {}", one_line(&e)))
    })?;
    Ok(re.replacen(&s, count.unwrap_or(0), repl.as_str()).into_owned())
}

/// A regex error on one line: the crate draws a caret under the pattern over several.
fn one_line(e: &regex::Error) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

fn jinja_error(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(detail) => format!("{} ({detail})", e.kind()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regex(pattern: &str, group_select: Option<i64>, fallback: Option<&str>) -> FilterStep {
        FilterStep {
            function: "regex".into(),
            regex_pattern: Some(pattern.into()),
            group_select,
            fallback: fallback.map(String::from),
        }
    }

    /// A pipeline of the given steps, compiled.
    fn pipeline(steps: Vec<FilterStep>) -> CompiledFilter {
        FilterPipeline { name: "get".into(), filter: steps }.compile().unwrap()
    }

    #[test]
    fn regex_filters_extract_as_lm_eval_does() {
        // One group: the group of the first match, stripped.
        let answer = pipeline(vec![regex(r"So .* = (-?\d+)", None, None)]);
        assert_eq!(answer.apply("Add 48 + 76 digit by digit:\n...\nSo 48 + 76 = 124\n"), "124");
        // Nothing matches: lm-eval's fallback, or the one given.
        assert_eq!(answer.apply("no idea"), "[invalid]");
        assert_eq!(pipeline(vec![regex(r"= (\d+)", None, Some("none"))]).apply("?"), "none");
        // group_select picks among matches, from the end when negative; without groups the
        // whole match; with several groups the first non-empty one.
        assert_eq!(pipeline(vec![regex(r"(\d)", Some(-1), None)]).apply("a 1 b 2"), "2");
        assert_eq!(pipeline(vec![regex(r"\d+", Some(1), None)]).apply("12 and 345"), "345");
        assert_eq!(pipeline(vec![regex(r"(x)|(y)", None, None)]).apply("y"), "y");
        assert_eq!(pipeline(vec![regex(r"(\d)", Some(5), None)]).apply("1"), "[invalid]");
        // A pipeline applies its steps in order.
        let lower =
            FilterStep { function: "lowercase".into(), regex_pattern: None, group_select: None, fallback: None };
        let p = pipeline(vec![lower, regex(r"answer: (\w+)", None, None)]);
        assert_eq!(p.apply("ANSWER: Paris"), "paris");
    }

    #[test]
    fn filter_lists_are_checked() {
        let base = "task: t\ndataset_kwargs: {data_files: {test: x.jsonl}}\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\n";
        let ok = format!("{base}filter_list:\n  - name: get\n    filter:\n      - function: regex\n        regex_pattern: '(\\d+)'\n      - function: take_first\n");
        assert_eq!(TaskConfig::from_yaml(&ok).unwrap().filter_list[0].filter.len(), 2);
        let bad = format!("{base}filter_list:\n  - name: get\n    filter:\n      - function: majority_vote\n");
        assert!(TaskConfig::from_yaml(&bad).unwrap_err().to_string().contains("`majority_vote` is not supported"));
        let mc = "task: t\ndataset_kwargs: {data_files: {test: x.jsonl}}\ntest_split: test\noutput_type: multiple_choice\ndoc_to_text: q\ndoc_to_choice: c\ndoc_to_target: 0\nfilter_list: [{name: g, filter: [{function: lowercase}]}]\n";
        assert!(TaskConfig::from_yaml(mc).unwrap_err().to_string().contains("generate_until tasks only"));
    }
}
