//! Files of several documents (`---` between them), each an Experiment, a Schedule or a
//! Workflow: split, each with its kind and name, for `faultctl apply`.

use serde::Deserialize;

use crate::fault::SpecError;

/// The kinds of document the coordinator takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Experiment,
    Schedule,
    Workflow,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Experiment => "Experiment",
            Kind::Schedule => "Schedule",
            Kind::Workflow => "Workflow",
        }
    }
}

/// One document of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub kind: Kind,
    /// `metadata.name`, when given (the coordinator checks it).
    pub name: String,
    /// The document alone, as YAML.
    pub text: String,
}

/// Splits `text` into its documents (empty ones dropped); errors name the document by its
/// position (`document 2: kind: ...`).
pub fn split(text: &str) -> Result<Vec<Document>, SpecError> {
    let mut out = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let at = format!("document {}", i + 1);
        let value = serde_yaml_ng::Value::deserialize(de)
            .map_err(|e| SpecError::new(&at, format!("is not YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let kind = match value.get("kind").and_then(|k| k.as_str()) {
            Some("Experiment") => Kind::Experiment,
            Some("Schedule") => Kind::Schedule,
            Some("Workflow") => Kind::Workflow,
            Some(o) => {
                return Err(SpecError::new(
                    format!("{at}: kind"),
                    format!("{o:?} is not a kind; use Experiment, Schedule or Workflow"),
                ))
            }
            None => {
                return Err(SpecError::new(
                    format!("{at}: kind"),
                    "is required (Experiment, Schedule or Workflow)",
                ))
            }
        };
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_string();
        let text = serde_yaml_ng::to_string(&value)
            .map_err(|e| SpecError::new(&at, format!("could not be re-encoded: {e}")))?;
        out.push(Document { kind, name, text });
    }
    if out.is_empty() {
        return Err(SpecError::new("document", "the file holds no document"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_kinds_and_names() {
        let docs = split(
            "kind: Schedule\nmetadata: {name: a}\n---\n---\nkind: Workflow\nmetadata: {name: b}\n",
        )
        .expect("split");
        assert_eq!(docs.len(), 2);
        assert_eq!((docs[0].kind, docs[0].name.as_str()), (Kind::Schedule, "a"));
        assert_eq!((docs[1].kind, docs[1].name.as_str()), (Kind::Workflow, "b"));
        let e = split("kind: Experiment\n---\nkind: Job\n").expect_err("Job");
        assert_eq!(e.path, "document 2: kind");
    }
}
