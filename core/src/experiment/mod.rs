//! Experiments: the document, validation, and the planner (blast radius and policy). Pure.
