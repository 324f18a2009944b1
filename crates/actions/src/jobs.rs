//! Job templates: the site-specific jobs that run the actions no generic
//! Kubernetes call can do (a backup, a database failover).
//!
//! An operator configures them in a YAML file, one entry per action and
//! workload:
//!
//! ```yaml
//! templates:
//!   - action: backup_data
//!     namespace: data              # optional: any namespace
//!     kind: persistentvolumeclaim  # optional: any kind the action takes
//!     target: postgres-data-0      # optional: any object
//!     job:                         # a batch/v1 JobSpec
//!       backoffLimit: 1
//!       template:
//!         spec:
//!           restartPolicy: Never
//!           containers:
//!             - name: backup
//!               image: registry.example.com/pg-backup:1
//! ```
//!
//! The first entry that matches the action and target is used. Analyze
//! offers a job-template action only for targets that have one, and
//! execute creates the Job from it.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use steward_proto::v1::Target;

/// One configured job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobTemplate {
    /// Registry action the job performs.
    pub action: String,
    /// Namespace the target must be in; any when absent.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Kind label the target must have; any when absent.
    #[serde(default)]
    pub kind: Option<String>,
    /// Name the target must have; any when absent.
    #[serde(default)]
    pub target: Option<String>,
    /// The Job's spec (`batch/v1` JobSpec).
    pub job: Value,
}

impl JobTemplate {
    fn matches(&self, action: &str, target: &Target) -> bool {
        self.action == action
            && self
                .namespace
                .as_deref()
                .is_none_or(|namespace| namespace == target.namespace)
            && self
                .kind
                .as_deref()
                .is_none_or(|kind| kind == target.kind().label())
            && self
                .target
                .as_deref()
                .is_none_or(|name| name == target.name)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    templates: Vec<JobTemplate>,
}

/// The configured job templates.
#[derive(Debug, Clone, Default)]
pub struct JobTemplates {
    templates: Vec<JobTemplate>,
}

impl JobTemplates {
    /// Loads the templates from a YAML file.
    ///
    /// # Errors
    /// Fails when the file cannot be read or parsed, or an entry names an
    /// action that does not run a job template or has no pod template,
    /// naming the entry.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("failed to read job templates {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("job templates {}: {e}", path.display()))
    }

    /// Parses templates from YAML text.
    ///
    /// # Errors
    /// As [`JobTemplates::load`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        for (index, template) in file.templates.iter().enumerate() {
            let spec = crate::find(&template.action).ok_or_else(|| {
                format!(
                    "templates[{index}]: action {:?} is not in the registry",
                    template.action
                )
            })?;
            if !spec.job_template {
                return Err(format!(
                    "templates[{index}]: action {} does not run a job template",
                    spec.name
                ));
            }
            if !template.job["template"]["spec"]["containers"].is_array() {
                return Err(format!(
                    "templates[{index}]: job.template.spec.containers is missing; job must be a batch/v1 JobSpec"
                ));
            }
        }
        Ok(Self {
            templates: file.templates,
        })
    }

    /// Returns the template for `action` on `target`, if one is configured.
    pub fn find(&self, action: &str, target: &Target) -> Option<&JobTemplate> {
        self.templates
            .iter()
            .find(|template| template.matches(action, target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_proto::v1::TargetKind;

    const FILE: &str = r#"
templates:
  - action: backup_data
    namespace: data
    job:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: backup, image: "backup:1"}]
"#;

    fn claim(namespace: &str) -> Target {
        Target {
            kind: TargetKind::PersistentVolumeClaim as i32,
            namespace: namespace.to_owned(),
            name: "postgres-data-0".to_owned(),
        }
    }

    #[test]
    fn templates_match_action_and_namespace() {
        let templates = JobTemplates::parse(FILE).expect("valid file");
        assert!(templates.find("backup_data", &claim("data")).is_some());
        assert!(templates.find("backup_data", &claim("shop")).is_none());
        assert!(templates.find("cleanup_storage", &claim("data")).is_none());
    }

    #[test]
    fn template_for_an_api_action_is_rejected() {
        let error = JobTemplates::parse(&FILE.replace("backup_data", "delete_pod"))
            .expect_err("not a job action");
        assert!(error.contains("does not run a job template"), "{error}");
    }

    #[test]
    fn template_without_containers_is_rejected() {
        let error = JobTemplates::parse("templates:\n  - action: backup_data\n    job: {}\n")
            .expect_err("no pod template");
        assert!(
            error.contains("job.template.spec.containers is missing"),
            "{error}"
        );
    }
}
