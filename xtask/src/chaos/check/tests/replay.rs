//! Replays a history a chaos run dumped (`history.txt`: one `op ...` or `watch ...` line each,
//! the calls, outcomes and events in Rust's debug syntax) through the checker:
//! `CHECK_REPLAY=target/xtask-chaos/etcd/history.txt cargo nextest run -p xtask --release
//! --run-ignored only replay --no-capture`.

use std::collections::BTreeMap;

use super::*;

/// A value in Rust's debug syntax.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Number(i64),
    Text(String),
    /// `Name`, `Name(values)` or `Name { fields }`.
    Named(String, Vec<Value>, BTreeMap<String, Value>),
    List(Vec<Value>),
}

struct Parser<'a> {
    rest: &'a str,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        match self.rest.strip_prefix(token) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn word(&mut self) -> String {
        self.skip_space();
        let end = self
            .rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(self.rest.len());
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        word.to_string()
    }

    fn value(&mut self) -> Value {
        self.skip_space();
        if self.eat("\"") {
            let mut text = String::new();
            let mut chars = self.rest.char_indices();
            while let Some((at, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            text.push(escaped);
                        }
                    }
                    '"' => {
                        self.rest = &self.rest[at + 1..];
                        return Value::Text(text);
                    }
                    c => text.push(c),
                }
            }
            panic!("unterminated string");
        }
        if self.eat("[") {
            let mut items = Vec::new();
            while !self.eat("]") {
                items.push(self.value());
                self.eat(",");
            }
            return Value::List(items);
        }
        let word = self.word();
        if let Ok(number) = word.parse() {
            return Value::Number(number);
        }
        let mut positional = Vec::new();
        let mut fields = BTreeMap::new();
        if self.eat("(") {
            while !self.eat(")") {
                positional.push(self.value());
                self.eat(",");
            }
        } else if self.eat("{") {
            while !self.eat("}") {
                let name = self.word();
                assert!(self.eat(":"), "field {name} without a value");
                fields.insert(name, self.value());
                self.eat(",");
            }
        }
        Value::Named(word, positional, fields)
    }
}

impl Value {
    fn field(&self, name: &str) -> &Value {
        match self {
            Value::Named(_, _, fields) => &fields[name],
            other => panic!("no field {name} in {other:?}"),
        }
    }

    fn name(&self) -> &str {
        match self {
            Value::Named(name, _, _) => name,
            other => panic!("not a named value: {other:?}"),
        }
    }

    fn number(&self) -> i64 {
        match self {
            Value::Number(number) => *number,
            other => panic!("not a number: {other:?}"),
        }
    }

    fn text(&self) -> String {
        match self {
            Value::Text(text) => text.clone(),
            other => panic!("not a string: {other:?}"),
        }
    }

    /// `Some(x)` as `Some(&x)`, `None` as `None`.
    fn option(&self) -> Option<&Value> {
        match self {
            Value::Named(name, positional, _) if name == "Some" => positional.first(),
            Value::Named(name, _, _) if name == "None" => None,
            other => panic!("not an option: {other:?}"),
        }
    }
}

fn call(value: &Value) -> Call {
    let key = value.field("key").text();
    match value.name() {
        "Put" => Call::Put {
            key,
            value: value.field("value").text(),
        },
        "Get" => Call::Get { key },
        "Delete" => Call::Delete { key },
        "Cas" => Call::Cas {
            key,
            expected: value.field("expected").option().map(Value::text),
            value: value.field("value").text(),
        },
        other => panic!("unknown call {other}"),
    }
}

fn outcome(value: &Value) -> Outcome {
    let revision = || value.field("revision").number();
    match value.name() {
        "Unknown" => Outcome::Unknown,
        "Put" => Outcome::Put {
            revision: revision(),
        },
        "Get" => Outcome::Get {
            revision: revision(),
            kv: value.field("kv").option().map(|kv| ObservedKv {
                value: kv.field("value").text(),
                create_revision: kv.field("create_revision").number(),
                mod_revision: kv.field("mod_revision").number(),
                version: kv.field("version").number(),
            }),
        },
        "Delete" => Outcome::Delete {
            revision: revision(),
            deleted: value.field("deleted").number(),
        },
        "Cas" => Outcome::Cas {
            revision: revision(),
            succeeded: value.field("succeeded").name() == "true",
        },
        other => panic!("unknown outcome {other}"),
    }
}

/// `name=value` pairs up to the first field that is not one.
fn attributes(parser: &mut Parser<'_>, names: &[&str]) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for name in names {
        parser.skip_space();
        let prefix = format!("{name}=");
        let rest = parser
            .rest
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("expected {prefix} in {}", parser.rest));
        let end = if let Some(quoted) = rest.strip_prefix('"') {
            1 + quoted.find('"').expect("closing quote") + 1
        } else {
            rest.find(' ').unwrap_or(rest.len())
        };
        found.insert(name.to_string(), rest[..end].trim_matches('"').to_string());
        parser.rest = &rest[end..];
    }
    found
}

fn parse(text: &str) -> History {
    let mut history = History::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("op ") {
            let mut parser = Parser { rest };
            let at = attributes(&mut parser, &["client", "invoke", "return"]);
            let the_call = call(&parser.value());
            assert!(parser.eat("=>"), "no outcome in {line}");
            let the_outcome = outcome(&parser.value());
            history.operations.push(Operation {
                client: at["client"].parse().expect("client"),
                invoke_ns: at["invoke"].parse().expect("invoke"),
                return_ns: at["return"].parse().ok(),
                call: the_call,
                outcome: the_outcome,
            });
        } else if let Some(rest) = line.strip_prefix("watch ") {
            let mut parser = Parser { rest };
            let names = [
                "watcher",
                "member",
                "opened",
                "prefix",
                "start",
                "complete_to",
            ];
            let at = attributes(&mut parser, &names);
            assert!(parser.eat("events="), "no events in {line}");
            let Value::List(events) = parser.value() else {
                panic!("events are not a list in {line}");
            };
            history.watches.push(WatchRecord {
                watcher: at["watcher"].parse().expect("watcher"),
                prefix: at["prefix"].clone(),
                start_revision: at["start"].parse().expect("start"),
                complete_to: at["complete_to"].parse().expect("complete_to"),
                events: events
                    .iter()
                    .map(|event| WatchEvent {
                        kind: match event.field("kind").name() {
                            "Put" => EventKind::Put,
                            _ => EventKind::Delete,
                        },
                        key: event.field("key").text(),
                        value: event.field("value").text(),
                        mod_revision: event.field("mod_revision").number(),
                    })
                    .collect(),
            });
        }
    }
    history
}

#[test]
fn the_dump_syntax_parses() {
    let text = "op client=3 invoke=10 return=20 Get { key: \"k\" } => Get { revision: 5, kv: \
                Some(ObservedKv { value: \"a\\\"b\", create_revision: 4, mod_revision: 5, \
                version: 2 }) }\n\
                op client=6 invoke=30 return=unknown Cas { key: \"k\", expected: None, value: \
                \"c\" } => Unknown\n\
                watch watcher=0 member=m0 opened=1 prefix=\"k\" start=2 complete_to=9 \
                events=[WatchEvent { kind: Delete, key: \"k\", value: \"\", mod_revision: 6 }]\n";
    let history = parse(text);
    assert_eq!(
        history.operations,
        vec![
            op(3, 0, None, get("k"), read(5, "a\"b", 4, 5, 2)),
            op(6, 0, None, cas("k", None, "c"), Outcome::Unknown),
        ]
        .into_iter()
        .zip([(10, Some(20)), (30, None)])
        .map(|(op, (invoke, ret))| Operation {
            invoke_ns: invoke,
            return_ns: ret,
            ..op
        })
        .collect::<Vec<_>>()
    );
    assert_eq!(
        history.watches,
        vec![WatchRecord {
            watcher: 0,
            prefix: "k".into(),
            start_revision: 2,
            complete_to: 9,
            events: vec![delete_event("k", 6)],
        }]
    );
}

#[test]
#[ignore = "needs CHECK_REPLAY=path/to/history.txt"]
fn replay() {
    let path = std::env::var("CHECK_REPLAY").expect("CHECK_REPLAY=path/to/history.txt");
    let text = std::fs::read_to_string(&path).expect("the history file");
    let history = parse(&text);
    let started = std::time::Instant::now();
    let report = check(&history);
    eprintln!("{report}(checked in {:?})", started.elapsed());
}
