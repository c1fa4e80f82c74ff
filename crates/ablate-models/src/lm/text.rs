//! Corpora: a seeded synthetic corpus a tiny byte-level transformer can learn from, reading a
//! corpus file into documents, the train/validation split, and the packed token stream.

use super::tasks::{Task, draw_task};
use super::vocab;
use crate::rng::SplitMix64;

/// [`SplitMix64`] stream ids of the corpus, continuing `layout.rs`'s `STREAM_LM_*` numbering.
const STREAM_LM_CORPUS: u64 = 14;
const STREAM_LM_SPLIT: u64 = 15;

/// A seeded synthetic corpus of `docs` ASCII documents, each a few short lines without blank
/// lines (so [`split_documents`] recovers them from a file that separates them by blank lines).
///
/// The seed first builds a small world (eight countries with cities, a river and a language;
/// twenty-four people with a city, a job, an age and a pet), whose facts recur across
/// documents, then draws each document's kind:
///
/// - facts: `the capital of Varo is Lumek.`, `Lumek lies on the river Esk.`, `Tomas works as a
///   baker.`, … about one country or person;
/// - records: `name: Tomas` / `city: Lumek` / `job: baker` / `age: 34` / `pet: cat`;
/// - numbered lists of a country's cities: `cities of Varo:` / `1. Lumek` / `2. …`;
/// - counting: `count: 17 18 19 20 21 22`, `by 3: 12 15 18 21 24`, `letters: f g h i j`;
/// - worked examples of the one-shot tasks ([`super::Task`]), one per line, in exactly
///   their prompt format: `copy: kqz -> kqz`, `reverse: abc -> cba`,
///   `get: a=3 m=7 t=5; m -> 7`.
pub fn synthetic_corpus(docs: usize, seed: u64) -> Vec<String> {
    let mut rng = SplitMix64::new(seed, STREAM_LM_CORPUS);
    let world = World::new(&mut rng);
    (0..docs)
        .map(|_| {
            let lines = match rng.below(21) {
                0..=4 => world.country_facts(&mut rng),
                5..=8 => world.person_facts(&mut rng),
                9..=10 => world.record(&mut rng),
                11..=12 => world.city_list(&mut rng),
                13..=14 => counting(&mut rng),
                15..=16 => task_lines(Task::Copy, &mut rng),
                17..=18 => task_lines(Task::Reverse, &mut rng),
                _ => task_lines(Task::Lookup, &mut rng),
            };
            lines.join("\n")
        })
        .collect()
}

/// The documents of a corpus file: separated by one or more blank (or whitespace-only) lines,
/// each trimmed; empty ones dropped.
pub fn split_documents(text: &str) -> Vec<String> {
    let mut docs = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut flush = |current: &mut Vec<&str>| {
        let doc = current.join("\n");
        let doc = doc.trim();
        if !doc.is_empty() {
            docs.push(doc.to_string());
        }
        current.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut current);
        } else {
            current.push(line);
        }
    }
    flush(&mut current);
    docs
}

/// Shuffles `docs` by `seed` and puts the first `round(val_frac · n)` of them (at least one when
/// `n ≥ 2` and `val_frac > 0`; `val_frac` is clamped to `[0, 1]`) into validation.
/// Returns `(train, validation)`.
pub fn train_val_split(
    mut docs: Vec<String>,
    val_frac: f64,
    seed: u64,
) -> (Vec<String>, Vec<String>) {
    let n = docs.len();
    let frac = if val_frac.is_nan() {
        0.0
    } else {
        val_frac.clamp(0.0, 1.0)
    };
    let mut n_val = (frac * n as f64).round() as usize;
    if n >= 2 && frac > 0.0 {
        n_val = n_val.max(1);
    }
    let n_val = n_val.min(n);
    SplitMix64::new(seed, STREAM_LM_SPLIT).shuffle(&mut docs);
    let train = docs.split_off(n_val);
    (train, docs)
}

/// The documents' bytes joined by `"\n\n"`, one stream that training windows are cut from
/// (windows may cross document boundaries, like T5's packed examples).
pub fn token_stream(docs: &[String]) -> Vec<u32> {
    let mut out = Vec::with_capacity(docs.iter().map(|d| d.len() + 2).sum());
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.extend(vocab::encode("\n\n"));
        }
        out.extend(vocab::encode(d));
    }
    out
}

const JOBS: [&str; 10] = [
    "baker", "smith", "farmer", "sailor", "teacher", "miller", "weaver", "potter", "guard",
    "healer",
];
const PETS: [&str; 6] = ["cat", "dog", "goat", "owl", "horse", "fox"];

struct Country {
    name: String,
    /// The first is the capital.
    cities: Vec<String>,
    river: String,
    language: String,
}

struct Person {
    name: String,
    country: usize,
    city: usize,
    job: &'static str,
    age: usize,
    pet: &'static str,
}

struct World {
    countries: Vec<Country>,
    people: Vec<Person>,
}

impl World {
    fn new(rng: &mut SplitMix64) -> World {
        let mut names = Names(Vec::new());
        let countries = (0..8)
            .map(|_| Country {
                name: names.fresh(rng),
                cities: (0..3 + rng.below(2)).map(|_| names.fresh(rng)).collect(),
                river: names.fresh(rng),
                language: format!("{}ic", names.fresh(rng)),
            })
            .collect::<Vec<_>>();
        let people = (0..24)
            .map(|_| {
                let country = rng.below(countries.len());
                Person {
                    name: names.fresh(rng),
                    country,
                    city: rng.below(countries[country].cities.len()),
                    job: JOBS[rng.below(JOBS.len())],
                    age: 18 + rng.below(63),
                    pet: PETS[rng.below(PETS.len())],
                }
            })
            .collect();
        World { countries, people }
    }

    fn country_facts(&self, rng: &mut SplitMix64) -> Vec<String> {
        let c = &self.countries[rng.below(self.countries.len())];
        let capital = &c.cities[0];
        let other = &c.cities[1 + rng.below(c.cities.len() - 1)];
        let mut lines = vec![
            format!("the capital of {} is {capital}.", c.name),
            format!("{capital} lies on the river {}.", c.river),
            format!("the people of {} speak {}.", c.name, c.language),
            format!("{other} is a city in {}.", c.name),
        ];
        pick_lines(&mut lines, rng);
        lines
    }

    fn person_facts(&self, rng: &mut SplitMix64) -> Vec<String> {
        let p = &self.people[rng.below(self.people.len())];
        let c = &self.countries[p.country];
        let mut lines = vec![
            format!("{} lives in {}.", p.name, c.cities[p.city]),
            format!("{} works as {}.", p.name, with_article(p.job)),
            format!("{} is {} years old.", p.name, p.age),
            format!("{} has {}.", p.name, with_article(p.pet)),
            format!("{} was born in {}.", p.name, c.name),
        ];
        pick_lines(&mut lines, rng);
        lines
    }

    fn record(&self, rng: &mut SplitMix64) -> Vec<String> {
        let p = &self.people[rng.below(self.people.len())];
        vec![
            format!("name: {}", p.name),
            format!("city: {}", self.countries[p.country].cities[p.city]),
            format!("job: {}", p.job),
            format!("age: {}", p.age),
            format!("pet: {}", p.pet),
        ]
    }

    fn city_list(&self, rng: &mut SplitMix64) -> Vec<String> {
        let c = &self.countries[rng.below(self.countries.len())];
        let mut lines = vec![format!("cities of {}:", c.name)];
        lines.extend(
            c.cities
                .iter()
                .enumerate()
                .map(|(i, city)| format!("{}. {city}", i + 1)),
        );
        lines
    }
}

/// `a baker`, `an owl`.
fn with_article(noun: &str) -> String {
    let article = if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {noun}")
}

/// Keeps two to four of `lines`, in a random order.
fn pick_lines(lines: &mut Vec<String>, rng: &mut SplitMix64) {
    rng.shuffle(lines);
    lines.truncate(2 + rng.below(3));
}

fn counting(rng: &mut SplitMix64) -> Vec<String> {
    (0..2 + rng.below(2))
        .map(|_| match rng.below(3) {
            0 => {
                let start = rng.below(90);
                let run: Vec<String> = (start..start + 6).map(|v| v.to_string()).collect();
                format!("count: {}", run.join(" "))
            }
            1 => {
                let step = 2 + rng.below(4);
                let start = step * rng.below(10);
                let run: Vec<String> = (0..5).map(|i| (start + i * step).to_string()).collect();
                format!("by {step}: {}", run.join(" "))
            }
            _ => {
                let start = rng.below(20) as u8;
                let run: Vec<String> = (0..5)
                    .map(|i| ((b'a' + start + i) as char).to_string())
                    .collect();
                format!("letters: {}", run.join(" "))
            }
        })
        .collect()
}

fn task_lines(task: Task, rng: &mut SplitMix64) -> Vec<String> {
    (0..3 + rng.below(3))
        .map(|_| {
            let (prompt, answer) = draw_task(task, rng);
            format!("{prompt}{answer}")
        })
        .collect()
}

/// Pronounceable capitalised names, distinct within one world.
struct Names(Vec<String>);

impl Names {
    fn fresh(&mut self, rng: &mut SplitMix64) -> String {
        const ONSETS: [&str; 16] = [
            "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "th", "sh",
        ];
        const VOWELS: [&str; 5] = ["a", "e", "i", "o", "u"];
        const CODAS: [&str; 6] = ["", "", "n", "r", "k", "s"];
        loop {
            let mut name = String::new();
            for _ in 0..2 + rng.below(2) {
                name.push_str(ONSETS[rng.below(ONSETS.len())]);
                name.push_str(VOWELS[rng.below(VOWELS.len())]);
            }
            name.push_str(CODAS[rng.below(CODAS.len())]);
            name[..1].make_ascii_uppercase();
            if !self.0.contains(&name) {
                self.0.push(name.clone());
                return name;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_corpus_is_seeded_and_documents_survive_a_file() {
        let a = synthetic_corpus(300, 5);
        assert_eq!(a, synthetic_corpus(300, 5));
        assert_ne!(a, synthetic_corpus(300, 6));
        assert_eq!(a.len(), 300);
        let file = a.join("\n\n");
        assert_eq!(split_documents(&file), a);
        assert!(file.is_ascii());
        let lines: Vec<&str> = file.lines().filter(|l| !l.is_empty()).collect();
        assert!(lines.iter().all(|l| l.len() <= 60), "a line over 60 bytes");
        // Every kind of document occurs, and facts recur.
        for prefix in [
            "the capital of ",
            "name: ",
            "cities of ",
            "count: ",
            "copy: ",
            "reverse: ",
            "get: ",
        ] {
            assert!(
                lines.iter().any(|l| l.starts_with(prefix)),
                "no `{prefix}` line"
            );
        }
        let capital_lines: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("the capital of "))
            .collect();
        let mut distinct = capital_lines.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() <= 8 && capital_lines.len() > distinct.len());
        assert!(!file.contains(" a owl") && file.contains(" an owl"));
    }

    #[test]
    fn split_documents_takes_runs_of_blank_lines_and_trims() {
        let text = "\n\n  a b\nc  \n\n\n \t \nd\r\n\r\ne\n\n\n";
        assert_eq!(split_documents(text), vec!["a b\nc", "d", "e"]);
        assert!(split_documents("\n \n").is_empty());
    }

    #[test]
    fn train_val_split_is_seeded_and_sized() {
        let docs: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let (train, val) = train_val_split(docs.clone(), 0.25, 3);
        assert_eq!((train.len(), val.len()), (7, 3)); // round(2.5) = 3
        assert_eq!(
            (train.clone(), val.clone()),
            train_val_split(docs.clone(), 0.25, 3)
        );
        let mut all = [train, val].concat();
        all.sort();
        let mut sorted = docs.clone();
        sorted.sort();
        assert_eq!(all, sorted);
        assert_eq!(train_val_split(docs.clone(), 0.01, 3).1.len(), 1);
        assert_eq!(train_val_split(docs.clone(), 0.0, 3).1.len(), 0);
        assert_ne!(
            train_val_split(docs.clone(), 0.5, 3),
            train_val_split(docs, 0.5, 4)
        );
        assert_eq!(train_val_split(vec!["x".into()], 0.3, 1).1.len(), 0);
    }

    #[test]
    fn token_stream_joins_documents_with_a_blank_line() {
        let docs = vec!["ab".to_string(), "c".to_string()];
        assert_eq!(vocab::decode(&token_stream(&docs)), "ab\n\nc");
        assert!(token_stream(&[]).is_empty());
    }
}
