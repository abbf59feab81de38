//! GPT-3's synthetic arithmetic: its problem families, surface formats and worked solutions.
//!
//! Problems are values with known answers, so the same code writes training documents and
//! builds few-shot evaluation prompts whose answers are checked exactly.

use super::lexicon::is_held_out_pair;
use super::{any, Holdout};
use anyhow::{ensure, Context, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Most problems in one document; several problems in one format read like a few-shot prompt.
const MAX_PROBLEMS_PER_DOC: usize = 5;

/// Default share of documents that work one problem out step by step instead of listing answers.
const WORKED_SHARE: f64 = 0.25;

/// Draws `random_held_out` tries before concluding that the family has no held-out problems.
const HELD_OUT_DRAWS: usize = 100_000;

/// A binary arithmetic operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Add,
    Sub,
    Mul,
}

impl Op {
    pub const ALL: [Op; 3] = [Op::Add, Op::Sub, Op::Mul];

    pub fn apply(self, a: i64, b: i64) -> i64 {
        match self {
            Op::Add => a + b,
            Op::Sub => a - b,
            Op::Mul => a * b,
        }
    }

    pub fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
            Op::Mul => '*',
        }
    }

    /// The word a question uses ("What is 48 plus 76?").
    pub fn word(self) -> &'static str {
        match self {
            Op::Add => "plus",
            Op::Sub => "minus",
            Op::Mul => "times",
        }
    }
}

/// GPT-3's arithmetic task families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArithFamily {
    Add2,
    Add3,
    Add4,
    Add5,
    Sub2,
    Sub3,
    Sub4,
    Sub5,
    Mul2,
    /// Three one-digit numbers and two operators with brackets, e.g. "6+(4*8)".
    Composite1,
}

impl ArithFamily {
    pub const ALL: [ArithFamily; 10] = [
        ArithFamily::Add2,
        ArithFamily::Add3,
        ArithFamily::Add4,
        ArithFamily::Add5,
        ArithFamily::Sub2,
        ArithFamily::Sub3,
        ArithFamily::Sub4,
        ArithFamily::Sub5,
        ArithFamily::Mul2,
        ArithFamily::Composite1,
    ];

    /// The family's code in task names and configs: "2da" … "5da", "2ds" … "5ds", "2dm", "1dc".
    pub fn code(self) -> &'static str {
        match self {
            ArithFamily::Add2 => "2da",
            ArithFamily::Add3 => "3da",
            ArithFamily::Add4 => "4da",
            ArithFamily::Add5 => "5da",
            ArithFamily::Sub2 => "2ds",
            ArithFamily::Sub3 => "3ds",
            ArithFamily::Sub4 => "4ds",
            ArithFamily::Sub5 => "5ds",
            ArithFamily::Mul2 => "2dm",
            ArithFamily::Composite1 => "1dc",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.code() == code)
    }

    /// GPT-3's label for the family ("2D+", "5D-", "2Dx", "1DC"), for reports.
    pub fn name(self) -> &'static str {
        match self {
            ArithFamily::Add2 => "2D+",
            ArithFamily::Add3 => "3D+",
            ArithFamily::Add4 => "4D+",
            ArithFamily::Add5 => "5D+",
            ArithFamily::Sub2 => "2D-",
            ArithFamily::Sub3 => "3D-",
            ArithFamily::Sub4 => "4D-",
            ArithFamily::Sub5 => "5D-",
            ArithFamily::Mul2 => "2Dx",
            ArithFamily::Composite1 => "1DC",
        }
    }

    /// Operands are drawn uniformly from [0, 10^digits), as in GPT-3.
    pub fn digits(self) -> u32 {
        match self {
            ArithFamily::Add2 | ArithFamily::Sub2 | ArithFamily::Mul2 => 2,
            ArithFamily::Add3 | ArithFamily::Sub3 => 3,
            ArithFamily::Add4 | ArithFamily::Sub4 => 4,
            ArithFamily::Add5 | ArithFamily::Sub5 => 5,
            ArithFamily::Composite1 => 1,
        }
    }
}

/// How a problem is written out. Every format is a prompt followed by " " and the answer, the
/// target delimiter of few-shot evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArithFormat {
    /// "Q: What is 48 plus 76? A: 124"
    Question,
    /// "48 + 76 = 124"
    Equation,
    /// "Compute 48 - 76.\nAnswer: -28"
    Compute,
}

impl ArithFormat {
    pub const ALL: [ArithFormat; 3] = [ArithFormat::Question, ArithFormat::Equation, ArithFormat::Compute];
}

/// One arithmetic problem and its answer: `a op b`, or `a op (b inner c)` for one-digit
/// composites.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArithProblem {
    pub family: ArithFamily,
    pub a: i64,
    pub op: Op,
    pub b: i64,
    /// One-digit composites only: the operator and last operand inside the brackets.
    pub bracket: Option<(Op, i64)>,
    pub answer: i64,
}

impl ArithProblem {
    /// A random problem of `family` whose operands are not held out, for training documents.
    /// `holdout.numbers` must leave training pairs (`Holdout::validate` ensures it), otherwise
    /// this never returns.
    pub fn random<R: Rng + ?Sized>(rng: &mut R, family: ArithFamily, holdout: &Holdout) -> Self {
        loop {
            let problem = Self::draw(rng, family);
            if !problem.is_held_out(holdout) {
                return problem;
            }
        }
    }

    /// A random problem of `family` whose operands are held out, for evaluation on problems
    /// no training document contains; `None` when none turns up (e.g. a fraction of 0).
    pub fn random_held_out<R: Rng + ?Sized>(rng: &mut R, family: ArithFamily, holdout: &Holdout) -> Option<Self> {
        (0..HELD_OUT_DRAWS).map(|_| Self::draw(rng, family)).find(|p| p.is_held_out(holdout))
    }

    /// Whether the operand pair is held out: `(a, b)`, or `(a, 10 b + c)` for a composite
    /// `a op (b inner c)`. The operators do not matter, so "48 + 76" and "48 * 76" go together.
    pub fn is_held_out(&self, holdout: &Holdout) -> bool {
        let second = match self.bracket {
            Some((_, c)) => 10 * self.b + c,
            None => self.b,
        };
        is_held_out_pair(self.a, second, holdout.numbers)
    }

    fn draw<R: Rng + ?Sized>(rng: &mut R, family: ArithFamily) -> Self {
        let top = 10i64.pow(family.digits());
        let a = rng.random_range(0..top);
        let b = rng.random_range(0..top);
        let (op, bracket) = match family {
            ArithFamily::Add2 | ArithFamily::Add3 | ArithFamily::Add4 | ArithFamily::Add5 => (Op::Add, None),
            ArithFamily::Sub2 | ArithFamily::Sub3 | ArithFamily::Sub4 | ArithFamily::Sub5 => (Op::Sub, None),
            ArithFamily::Mul2 => (Op::Mul, None),
            ArithFamily::Composite1 => (any(&Op::ALL, rng), Some((any(&Op::ALL, rng), rng.random_range(0..top)))),
        };
        Self::new(family, a, op, b, bracket)
    }

    /// The problem `a op b` (or `a op (b inner c)` with a bracket) with its answer computed;
    /// `family` is the label it is reported under.
    pub fn new(family: ArithFamily, a: i64, op: Op, b: i64, bracket: Option<(Op, i64)>) -> Self {
        let right = match bracket {
            Some((inner, c)) => inner.apply(b, c),
            None => b,
        };
        ArithProblem { family, a, op, b, bracket, answer: op.apply(a, right) }
    }

    /// The expression in symbols: "48 + 76", or "6+(4*8)" for composites as GPT-3 wrote them.
    pub fn expression(&self) -> String {
        match self.bracket {
            Some((inner, c)) => format!("{}{}({}{}{})", self.a, self.op.symbol(), self.b, inner.symbol(), c),
            None => format!("{} {} {}", self.a, self.op.symbol(), self.b),
        }
    }

    /// The problem as a question in words: "What is 48 plus 76?", or "What is 6+(4*8)?".
    pub fn question(&self) -> String {
        match self.bracket {
            Some(_) => format!("What is {}?", self.expression()),
            None => format!("What is {} {} {}?", self.a, self.op.word(), self.b),
        }
    }

    /// Everything of `render(format)` before the answer, for few-shot prompts.
    pub fn prompt(&self, format: ArithFormat) -> String {
        match format {
            ArithFormat::Question => format!("Q: {} A:", self.question()),
            ArithFormat::Equation => format!("{} =", self.expression()),
            ArithFormat::Compute => format!("Compute {}.\nAnswer:", self.expression()),
        }
    }

    /// The problem with its answer in `format`.
    pub fn render(&self, format: ArithFormat) -> String {
        format!("{} {}", self.prompt(format), self.answer)
    }

    /// A step-by-step solution ending in the answer: column addition with carries, or long
    /// multiplication by partial products. `None` for families without a worked form.
    pub fn worked(&self) -> Option<String> {
        match (self.op, self.bracket) {
            (Op::Add, None) => Some(self.worked_addition()),
            (Op::Mul, None) => Some(self.worked_multiplication()),
            _ => None,
        }
    }

    fn worked_addition(&self) -> String {
        let mut lines = vec![format!("Add {} + {} digit by digit, from the right:", self.a, self.b)];
        let (mut x, mut y, mut carry) = (self.a, self.b, 0);
        loop {
            let (dx, dy) = (x % 10, y % 10);
            let sum = dx + dy + carry;
            let step = match carry {
                0 => format!("{dx} + {dy} = {sum}, write {}", sum % 10),
                _ => format!("{dx} + {dy} + {carry} = {sum}, write {}", sum % 10),
            };
            carry = sum / 10;
            lines.push(match carry {
                0 => step,
                _ => format!("{step}, carry {carry}"),
            });
            x /= 10;
            y /= 10;
            if x == 0 && y == 0 {
                break;
            }
        }
        if carry > 0 {
            lines.push(format!("write the final carry {carry}"));
        }
        lines.push(format!("So {} = {}", self.expression(), self.answer));
        lines.join("\n")
    }

    fn worked_multiplication(&self) -> String {
        let mut lines = vec![format!("Multiply {} by each digit of {}:", self.a, self.b)];
        let mut partials = Vec::new();
        let (mut rest, mut place) = (self.b, 1);
        loop {
            let factor = rest % 10 * place;
            let partial = self.a * factor;
            lines.push(format!("{} * {factor} = {partial}", self.a));
            partials.push(partial.to_string());
            rest /= 10;
            place *= 10;
            if rest == 0 {
                break;
            }
        }
        if partials.len() > 1 {
            lines.push(format!("{} = {}", partials.join(" + "), self.answer));
        }
        lines.push(format!("So {} = {}", self.expression(), self.answer));
        lines.join("\n")
    }
}

/// Which arithmetic a corpus holds: its families (codes, default all ten) and the share of
/// problems with a worked form that are written worked (default a quarter). The chain-of-thought
/// probe trains on additions only, half of them worked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArithmeticMix {
    pub families: Vec<String>,
    pub worked_share: f64,
}

impl Default for ArithmeticMix {
    fn default() -> Self {
        Self { families: ArithFamily::ALL.iter().map(|f| f.code().to_string()).collect(), worked_share: WORKED_SHARE }
    }
}

impl ArithmeticMix {
    /// The families, checked; an unknown code or an empty list is a one-line error.
    pub fn resolve(&self) -> Result<Vec<ArithFamily>> {
        ensure!(!self.families.is_empty(), "synth.arithmetic.families must name at least one family");
        ensure!(
            (0.0..=1.0).contains(&self.worked_share),
            "synth.arithmetic.worked_share must be in [0, 1], got {}",
            self.worked_share
        );
        self.families
            .iter()
            .map(|c| {
                ArithFamily::from_code(c).with_context(|| {
                    let codes: Vec<&str> = ArithFamily::ALL.iter().map(|f| f.code()).collect();
                    format!(
                        "unknown arithmetic family {c:?} in synth.arithmetic.families; families are {}",
                        codes.join(", ")
                    )
                })
            })
            .collect()
    }
}

/// A training document: one worked problem, or one to a few problems of one family in one
/// format separated by blank lines, never with held-out operands. `families` comes from
/// [`ArithmeticMix::resolve`].
pub fn random_document<R: Rng + ?Sized>(
    rng: &mut R,
    holdout: &Holdout,
    families: &[ArithFamily],
    worked_share: f64,
) -> String {
    let family = any(families, rng);
    let first = ArithProblem::random(rng, family, holdout);
    if rng.random_bool(worked_share) {
        if let Some(worked) = first.worked() {
            return worked;
        }
    }
    let format = any(&ArithFormat::ALL, rng);
    let mut problems = vec![first];
    for _ in 1..rng.random_range(1..=MAX_PROBLEMS_PER_DOC) {
        problems.push(ArithProblem::random(rng, family, holdout));
    }
    problems.iter().map(|p| p.render(format)).collect::<Vec<_>>().join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn answers_are_correct_in_every_family() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let holdout = Holdout::default();
        for family in ArithFamily::ALL {
            let top = 10i64.pow(family.digits());
            for _ in 0..50 {
                let p = ArithProblem::random(&mut rng, family, &holdout);
                assert!((0..top).contains(&p.a) && (0..top).contains(&p.b));
                let expected = match (family, p.bracket) {
                    (ArithFamily::Mul2, _) => p.a * p.b,
                    (ArithFamily::Composite1, Some((inner, c))) => p.op.apply(p.a, inner.apply(p.b, c)),
                    (ArithFamily::Composite1, None) => panic!("composite without bracket"),
                    _ if family.name().ends_with('+') => p.a + p.b,
                    _ => p.a - p.b,
                };
                assert_eq!(p.answer, expected, "{p:?}");
            }
        }
    }

    #[test]
    fn formats_render_prompt_then_answer() {
        let p = ArithProblem::new(ArithFamily::Add2, 48, Op::Add, 76, None);
        assert_eq!(p.render(ArithFormat::Question), "Q: What is 48 plus 76? A: 124");
        assert_eq!(p.render(ArithFormat::Equation), "48 + 76 = 124");
        let s = ArithProblem::new(ArithFamily::Sub2, 48, Op::Sub, 76, None);
        assert_eq!(s.render(ArithFormat::Compute), "Compute 48 - 76.\nAnswer: -28");
        let c = ArithProblem::new(ArithFamily::Composite1, 6, Op::Add, 4, Some((Op::Mul, 8)));
        assert_eq!(c.answer, 38);
        assert_eq!(c.render(ArithFormat::Question), "Q: What is 6+(4*8)? A: 38");
    }

    #[test]
    fn worked_steps_carry_and_sum_partial_products() {
        let add = ArithProblem::new(ArithFamily::Add3, 487, Op::Add, 356, None);
        assert_eq!(
            add.worked().unwrap(),
            "Add 487 + 356 digit by digit, from the right:\n\
             7 + 6 = 13, write 3, carry 1\n\
             8 + 5 + 1 = 14, write 4, carry 1\n\
             4 + 3 + 1 = 8, write 8\n\
             So 487 + 356 = 843"
        );
        let overflow = ArithProblem::new(ArithFamily::Add2, 95, Op::Add, 7, None);
        assert!(overflow.worked().unwrap().contains("write the final carry 1\nSo 95 + 7 = 102"));
        let mul = ArithProblem::new(ArithFamily::Mul2, 48, Op::Mul, 76, None);
        assert_eq!(
            mul.worked().unwrap(),
            "Multiply 48 by each digit of 76:\n48 * 6 = 288\n48 * 70 = 3360\n\
             288 + 3360 = 3648\nSo 48 * 76 = 3648"
        );
        let sub = ArithProblem::new(ArithFamily::Sub2, 5, Op::Sub, 3, None);
        assert_eq!(sub.worked(), None);
    }

    #[test]
    fn held_out_draws_and_training_draws_are_disjoint() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let holdout = Holdout::default();
        for family in ArithFamily::ALL {
            let held = ArithProblem::random_held_out(&mut rng, family, &holdout).unwrap();
            assert!(held.is_held_out(&holdout));
            assert!(!ArithProblem::random(&mut rng, family, &holdout).is_held_out(&holdout));
        }
        let none = Holdout { numbers: 0.0, ..Holdout::default() };
        assert_eq!(ArithProblem::random_held_out(&mut rng, ArithFamily::Add2, &none), None);
    }
}
