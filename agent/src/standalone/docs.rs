//! The fault file of `faultline-agent run -f FILE`: one or more YAML documents separated by
//! `---`, each one fault in the shape of a fault inside an experiment.

use faultline_core::fault::doc::parse_fault;
use faultline_core::fault::FaultSpec;

/// Splits YAML text into documents at `---` lines; keeps the documents that hold more than
/// blank lines and comments.
fn documents(text: &str) -> Vec<String> {
    let mut docs: Vec<String> = vec![String::new()];
    for line in text.lines() {
        let marker = line
            .strip_prefix("---")
            .filter(|rest| rest.is_empty() || rest.starts_with([' ', '\t']));
        match marker {
            Some(rest) => docs.push(format!("{}\n", rest.trim_start())),
            None => {
                if let Some(d) = docs.last_mut() {
                    d.push_str(line);
                    d.push('\n');
                }
            }
        }
    }
    docs.retain(|d| {
        d.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#') && t != "..."
        })
    });
    docs
}

/// Parses every fault document of `text`; `name` (the file as given) prefixes errors, which name
/// the document (counted from 1) and the field: `fault.yaml document 2: load: 150 is outside
/// 1..=100`.
pub fn parse_faults(name: &str, text: &str) -> Result<Vec<FaultSpec>, String> {
    let docs = documents(text);
    if docs.is_empty() {
        return Err(format!(
            "{name}: holds no fault document (write e.g. `kind: cpu` and `load: 50`, one fault per YAML document)"
        ));
    }
    docs.iter()
        .enumerate()
        .map(|(i, doc)| {
            parse_fault(doc).map_err(|e| {
                let what = if e.path.is_empty() {
                    e.message.clone()
                } else {
                    e.to_string()
                };
                format!("{name} document {}: {what}", i + 1)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_core::fault::FaultKind;

    #[test]
    fn several_documents_become_several_faults() {
        let text = "---\n# cpu first\nkind: cpu\nload: 50\n---\nkind: memory\nsize: 64Mi\n--- {kind: process, action: pause, selector: {pid: 4242}}\n---\n# trailing\n";
        let faults = parse_faults("f.yaml", text).expect("valid");
        assert_eq!(
            faults.iter().map(|f| f.kind()).collect::<Vec<_>>(),
            vec![FaultKind::Cpu, FaultKind::Memory, FaultKind::Process]
        );
    }

    #[test]
    fn errors_name_the_document_and_the_field() {
        let text = "kind: cpu\nload: 50\n---\nkind: cpu\nload: 150\n";
        let err = parse_faults("fault.yaml", text).expect_err("load 150");
        assert!(
            err.starts_with("fault.yaml document 2: load: 150 is outside 1..=100"),
            "{err}"
        );
        let err = parse_faults(
            "fault.yaml",
            "kind: process\naction: kill\nsignal: SIGFOO\nselector: {pid: 5}\n",
        )
        .expect_err("signal");
        assert!(
            err.starts_with("fault.yaml document 1: signal: \"SIGFOO\" is not a signal"),
            "{err}"
        );
        let err = parse_faults("f.yaml", "kind: cpu\nlod: 5\n").expect_err("unknown field");
        assert!(err.starts_with("f.yaml document 1: "), "{err}");
        assert!(err.contains("lod"), "{err}");
        let err = parse_faults("f.yaml", "# nothing\n---\n").expect_err("empty");
        assert!(err.starts_with("f.yaml: holds no fault document"), "{err}");
    }
}
