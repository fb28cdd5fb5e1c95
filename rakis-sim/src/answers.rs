//! The simulated answers: a small corpus of prompts whose honest answers vary in wording (as an
//! LLM at temperature > 0 does), and the adversarial rewrites of an honest answer.

use rand::rngs::StdRng;
use rand::Rng;

/// One prompt and how honest answers to it are worded.
#[derive(Clone, Debug)]
pub struct Topic {
    /// The prompt.
    pub prompt: &'static str,
    /// Sentence slots: an honest answer picks one alternative per slot (`""` leaves it out).
    pub slots: &'static [&'static [&'static str]],
    /// The key fact word of every honest answer …
    pub fact: &'static str,
    /// … and the wrong fact a subtle liar puts in its place.
    pub wrong_fact: &'static str,
}

const TOPICS: &[Topic] = &[
    Topic {
        prompt: "What is the capital of France?",
        slots: &[
            &[
                "The capital of France is Paris.",
                "Paris is the capital of France.",
                "France's capital city is Paris.",
            ],
            &[
                "It lies on the Seine river in the north of the country.",
                "The city sits on the river Seine in northern France.",
                "",
            ],
            &[
                "Paris is also the largest city of France and its political centre.",
                "Paris is the country's largest city and the seat of its government.",
                "",
            ],
            &[
                "It is known for the Eiffel Tower and the Louvre.",
                "Famous landmarks include the Eiffel Tower and the Louvre museum.",
                "",
            ],
        ],
        fact: "Paris",
        wrong_fact: "Lyon",
    },
    Topic {
        prompt: "At what temperature does water boil?",
        slots: &[
            &[
                "Water boils at 100 degrees Celsius at sea level.",
                "At sea level, water boils at 100 degrees Celsius.",
                "The boiling point of water is 100 degrees Celsius at normal pressure.",
            ],
            &[
                "That is 212 degrees Fahrenheit.",
                "In Fahrenheit this is 212 degrees.",
                "",
            ],
            &[
                "At higher altitude the air pressure is lower, so water boils at a lower temperature.",
                "On a mountain, lower pressure makes water boil below that temperature.",
                "",
            ],
        ],
        fact: "100",
        wrong_fact: "90",
    },
    Topic {
        prompt: "Who wrote Hamlet?",
        slots: &[
            &[
                "Hamlet was written by William Shakespeare.",
                "William Shakespeare wrote Hamlet.",
                "The play Hamlet is by William Shakespeare.",
            ],
            &[
                "He wrote it around 1600, in the Elizabethan era.",
                "It dates from about 1600.",
                "",
            ],
            &[
                "It is a tragedy about the Danish prince Hamlet who seeks revenge for his father.",
                "The tragedy follows Prince Hamlet of Denmark and his revenge for his murdered father.",
                "",
            ],
        ],
        fact: "Shakespeare",
        wrong_fact: "Marlowe",
    },
    Topic {
        prompt: "Which is the largest planet of the solar system?",
        slots: &[
            &[
                "The largest planet in the solar system is Jupiter.",
                "Jupiter is the largest planet of our solar system.",
                "Jupiter is the biggest planet orbiting the Sun.",
            ],
            &[
                "It is a gas giant made mostly of hydrogen and helium.",
                "This gas giant consists mainly of hydrogen and helium.",
                "",
            ],
            &[
                "Its mass is more than twice that of all the other planets combined.",
                "It is more massive than all other planets put together.",
                "",
            ],
        ],
        fact: "Jupiter",
        wrong_fact: "Saturn",
    },
    Topic {
        prompt: "What is the chemical symbol of gold?",
        slots: &[
            &[
                "The chemical symbol of gold is Au.",
                "Gold has the chemical symbol Au.",
                "Au is the symbol for the element gold.",
            ],
            &[
                "It comes from the Latin word aurum.",
                "The symbol derives from aurum, the Latin name of gold.",
                "",
            ],
            &[
                "Gold has the atomic number 79.",
                "Its atomic number is 79.",
                "",
            ],
        ],
        fact: "Au",
        wrong_fact: "Ag",
    },
    Topic {
        prompt: "How many continents are there?",
        slots: &[
            &[
                "There are seven continents.",
                "The Earth has seven continents.",
                "Most geographers count seven continents.",
            ],
            &[
                "They are Africa, Antarctica, Asia, Australia, Europe, North America and South America.",
                "These are Asia, Africa, North America, South America, Antarctica, Europe and Australia.",
                "",
            ],
            &[
                "Asia is the largest of them by area and population.",
                "The largest is Asia, both in area and in population.",
                "",
            ],
        ],
        fact: "seven",
        wrong_fact: "six",
    },
];

const GARBAGE: &[&str] = &[
    "banana",
    "quantum",
    "lorem",
    "ipsum",
    "velvet",
    "cascade",
    "turbine",
    "orchid",
    "nebula",
    "pixel",
    "granite",
    "saffron",
    "walrus",
    "tundra",
    "cobalt",
    "marble",
    "zephyr",
    "lantern",
    "origami",
    "falcon",
    "meadow",
    "vortex",
    "tangerine",
    "harbor",
    "crimson",
    "glacier",
    "puzzle",
    "sonnet",
    "cactus",
    "ember",
    "mosaic",
    "quartz",
    "riddle",
    "sapphire",
    "thimble",
    "umbrella",
];

/// The answers of a simulation: honest answers per prompt and the adversarial rewrites.
#[derive(Clone, Debug)]
pub struct Corpus {
    topics: Vec<Topic>,
    /// When set, every honest answer is the first alternative of each slot (no wording
    /// variance: temperature 0).
    pub deterministic: bool,
}

impl Default for Corpus {
    fn default() -> Self {
        Corpus {
            topics: TOPICS.to_vec(),
            deterministic: false,
        }
    }
}

impl Corpus {
    /// The built-in corpus with honest answers that never vary (greedy decoding).
    pub fn deterministic() -> Self {
        Corpus {
            deterministic: true,
            ..Corpus::default()
        }
    }

    /// Number of prompts.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    /// Whether the corpus has no prompt (never for the built-in one).
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// The topic of prompt `p` (modulo the corpus size).
    pub fn topic(&self, p: usize) -> &Topic {
        &self.topics[p % self.topics.len()]
    }

    /// An honest answer to prompt `p`, worded by `rng`.
    pub fn honest(&self, p: usize, rng: &mut StdRng) -> String {
        let t = self.topic(p);
        let mut parts = Vec::new();
        for slot in t.slots {
            let s = if self.deterministic {
                slot[0]
            } else {
                slot[rng.gen_range(0..slot.len())]
            };
            if !s.is_empty() {
                parts.push(s);
            }
        }
        parts.join(" ")
    }

    /// `text` with the key fact of prompt `p` swapped for a wrong one (a subtle lie).
    ///
    /// A text without the topic's fact (a real model's wording) gets its first number changed
    /// instead (7 → 8, 100 → 101), the smallest lie a reader would still call wrong.
    pub fn fact_swapped(&self, p: usize, text: &str) -> String {
        let t = self.topic(p);
        if text.contains(t.fact) {
            return text.replace(t.fact, t.wrong_fact);
        }
        let Some(start) = text.find(|c: char| c.is_ascii_digit()) else {
            return text.to_string();
        };
        let len = text[start..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len() - start);
        let swapped = match text[start..start + len].parse::<u64>() {
            Ok(n) => n.saturating_add(1).to_string(),
            Err(_) => return text.to_string(),
        };
        format!("{}{swapped}{}", &text[..start], &text[start + len..])
    }

    /// An honest-looking answer to another prompt.
    pub fn off_topic(&self, p: usize, rng: &mut StdRng) -> String {
        self.honest(p + 1 + rng.gen_range(0..self.len().max(2) - 1), rng)
    }

    /// Random words.
    pub fn garbage(rng: &mut StdRng) -> String {
        let n = rng.gen_range(15..40);
        (0..n)
            .map(|_| GARBAGE[rng.gen_range(0..GARBAGE.len())])
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The first `percent` % of the words of `text` (at least one word).
    pub fn truncated(text: &str, percent: u32) -> String {
        let words: Vec<&str> = text.split_whitespace().collect();
        let keep = ((words.len() as u64 * u64::from(percent)).div_ceil(100) as usize)
            .clamp(1, words.len().max(1));
        words[..keep.min(words.len())].join(" ")
    }
}
