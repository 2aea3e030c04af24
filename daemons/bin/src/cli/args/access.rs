//! Arguments of access control: `rbac …` and `keys …` (the Rbac API, admins only).

use clap::Subcommand;

/// `rbac …`.
#[derive(Debug, Subcommand)]
pub enum RbacCmd {
    /// Roles: the clusters a role may read, by id and/or by labels.
    #[command(subcommand)]
    Roles(Roles),
    /// Role bindings: which users and groups a role is granted to.
    #[command(subcommand)]
    Bindings(Bindings),
    /// The registered clusters a subject with these groups may read now.
    Readable {
        /// The subject: a user name, an OpenID Connect token's subject, or an API key's
        /// subject (apikey:NAME unless it was created with --subject).
        #[arg(long)]
        subject: String,
        /// A group the subject belongs to; repeat for several.
        #[arg(long = "group")]
        groups: Vec<String>,
    },
}

/// `rbac roles …`.
#[derive(Debug, Subcommand)]
pub enum Roles {
    /// Create a role; give cluster ids, a selector, or both.
    #[command(after_long_help = "\
Examples:
  opni-metrics rbac roles create prod-readers --selector env=prod
  opni-metrics rbac roles create team-a --cluster c1 --cluster c2
  opni-metrics rbac roles create eu --selector-expr 'region In eu-west,eu-central'")]
    Create {
        /// Lower-case letters, digits, '-' and '.'; 1 to 63 characters.
        name: String,
        /// A cluster id the role may read (it need not be registered yet); repeat for several.
        #[arg(long = "cluster")]
        clusters: Vec<String>,
        /// key=value: the role may read clusters with this label; repeat for several (all
        /// must match).
        #[arg(long = "selector")]
        selectors: Vec<String>,
        /// A set-based requirement: 'KEY In V1,V2', 'KEY NotIn V1,V2', 'KEY Exists' or
        /// 'KEY DoesNotExist'; repeat for several (all must hold).
        #[arg(long = "selector-expr")]
        selector_exprs: Vec<String>,
    },
    /// List roles.
    List,
    /// Show one role.
    Get {
        /// Role name.
        name: String,
    },
    /// Delete a role (refused while a binding grants it).
    Delete {
        /// Role name.
        name: String,
    },
}

/// `rbac bindings …`.
#[derive(Debug, Subcommand)]
pub enum Bindings {
    /// Grant a role to users and groups.
    #[command(after_long_help = "\
Example:
  opni-metrics rbac bindings create ops-prod --role prod-readers --subject group:ops --subject user:alice")]
    Create {
        /// Binding name: lower-case letters, digits, '-' and '.'.
        name: String,
        /// The role granted (it must exist).
        #[arg(long)]
        role: String,
        /// user:NAME or group:NAME; repeat for several. An API key acts as user:apikey:NAME
        /// unless it was created with --subject.
        #[arg(long = "subject", required = true)]
        subjects: Vec<String>,
    },
    /// List role bindings.
    List,
    /// Show one role binding.
    Get {
        /// Binding name.
        name: String,
    },
    /// Delete a role binding.
    Delete {
        /// Binding name.
        name: String,
    },
}

/// `keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Create an API key; prints the key once (it cannot be shown again).
    Create {
        /// A name for people: lower-case letters, digits, '-' and '.'; unique.
        name: String,
        /// The subject requests with the key act as (default apikey:NAME); bind roles to it
        /// with `--subject user:SUBJECT`.
        #[arg(long)]
        subject: Option<String>,
        /// A group requests with the key belong to; repeat for several.
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// List API keys (never the keys themselves).
    List,
    /// Revoke an API key by its id or name; requests with it fail from then on.
    Revoke {
        /// The key's id or name.
        id_or_name: String,
    },
}
