//! The relay Secret catalogue: DESIGN.md §1–§2's tables as data.
//!
//! Which Secrets the relay consists of, the data keys each holds, which
//! cluster holds which in every CA mode × client-certificate mode, and who
//! writes it: relayctl, the product's management server, the agent, or the
//! user's own PKI. The planner, `check` and observation all read this one
//! table; no Secret name or data key is spelled anywhere else.
//!
//! To add a relay Secret: a [`RelaySecret`] variant with its name, and its
//! rows in [`held`]. To add a CA mode: its rows in [`held`] (and its
//! desired trust in `plan::desired`).

use serde::{Deserialize, Serialize};

use crate::model::{CaMode, ClientCertMode};

/// Data keys, exactly as the product reads them.
pub mod key {
    /// The root certificate or bundle (PEM).
    pub const CA_CRT: &str = "ca.crt";
    /// A certificate chain: leaf (or CA) first (PEM).
    pub const TLS_CRT: &str = "tls.crt";
    /// The private key of `tls.crt` (PEM); of the root in `relay-root-tls-secret`.
    pub const TLS_KEY: &str = "tls.key";
    /// The identity token.
    pub const TOKEN: &str = "token";
    /// The inventory's list of workload clusters (JSON).
    pub const INVENTORY: &str = "clusters.json";

    /// Keys of the rotation record (`relayctl-<instance>-rotation`).
    pub mod rotation {
        /// Generations, and the rotation under way with its phase (JSON, no key).
        pub const STATE: &str = "state.json";
        /// The root being replaced (PEM).
        pub const OLD_ROOT_CRT: &str = "old-root.crt";
        /// Its key, when relayctl holds it (PEM).
        pub const OLD_ROOT_KEY: &str = "old-root.key";
        /// The root being introduced (PEM).
        pub const NEW_ROOT_CRT: &str = "new-root.crt";
        /// Its key, when relayctl holds it (PEM).
        pub const NEW_ROOT_KEY: &str = "new-root.key";
        /// The intermediate being replaced (PEM), kept for a rollback.
        pub const OLD_SIGNING_CRT: &str = "old-signing.crt";
        /// Its key (PEM).
        pub const OLD_SIGNING_KEY: &str = "old-signing.key";
        /// The intermediate being introduced (PEM).
        pub const NEW_SIGNING_CRT: &str = "new-signing.crt";
        /// Its key (PEM).
        pub const NEW_SIGNING_KEY: &str = "new-signing.key";
        /// The new intermediate signed by the old root: the cross-sign bridge (PEM).
        pub const CROSS_CRT: &str = "cross.crt";
    }
}

/// What a cluster is in the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs the management server.
    Management,
    /// Runs an agent.
    Workload,
    /// Left the config but is still in the inventory (pruned, or kept).
    Orphan,
}

impl Role {
    /// `management`, `workload` or `orphan`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Management => "management",
            Self::Workload => "workload",
            Self::Orphan => "orphan",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One of the relay's Secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RelaySecret {
    /// `relay-root-tls-secret`: the root CA (mgmt: its certificate and, when
    /// kept in the cluster, its key; workloads: the root bundle).
    Root,
    /// `relay-tls-signing-secret`: the intermediate CA that signs leaves (mgmt).
    Signing,
    /// `relay-server-tls-secret`: the management server's certificate (mgmt).
    Server,
    /// `relay-identity-token-secret`: the shared bootstrap token.
    Token,
    /// `relay-client-tls-secret`: an agent's client certificate (workloads).
    Client,
}

impl RelaySecret {
    /// Every relay Secret, in the order they are written.
    pub const ALL: [Self; 5] = [
        Self::Root,
        Self::Signing,
        Self::Server,
        Self::Token,
        Self::Client,
    ];

    /// The Secret's name, as the product expects it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Root => "relay-root-tls-secret",
            Self::Signing => "relay-tls-signing-secret",
            Self::Server => "relay-server-tls-secret",
            Self::Token => "relay-identity-token-secret",
            Self::Client => "relay-client-tls-secret",
        }
    }

    /// The relay Secret called `name`, if one is.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl std::fmt::Display for RelaySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Who writes a Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Owner {
    /// relayctl writes and repairs it.
    Relayctl,
    /// The product's management server made it at install (`gloo` mode):
    /// relayctl reads it, never writes it.
    ManagementServer,
    /// The agent writes it after bootstrapping with the token (`token`
    /// client mode): relayctl never writes or prunes it.
    Agent,
    /// The user's PKI writes it (`external` client mode without a source):
    /// relayctl only verifies it.
    UsersPki,
}

/// One row of the catalogue: a Secret a cluster holds, who writes it, and
/// its data keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Held {
    /// The Secret.
    pub secret: RelaySecret,
    /// Who writes it.
    pub owner: Owner,
    /// Its data keys, exactly.
    pub keys: &'static [&'static str],
}

const ROOT_WITH_KEY: &[&str] = &[key::CA_CRT, key::TLS_KEY];
const ROOT_BUNDLE: &[&str] = &[key::CA_CRT];
const TLS: &[&str] = &[key::TLS_CRT, key::TLS_KEY, key::CA_CRT];
const TOKEN: &[&str] = &[key::TOKEN];

/// What a cluster of `role` holds in a fleet of `ca` mode and `client` mode,
/// with identity tokens on or off, in write order. `client_source`: in
/// `external` client mode, whether the workload's certificate comes from a
/// source relayctl copies (else the user's PKI writes it).
pub fn held(
    ca: CaMode,
    client: ClientCertMode,
    tokens: bool,
    role: Role,
    client_source: bool,
) -> Vec<Held> {
    use RelaySecret::{Client, Root, Server, Signing, Token};
    let row = |secret, owner, keys| Held {
        secret,
        owner,
        keys,
    };
    let mut out = Vec::new();
    match role {
        Role::Management => match ca {
            CaMode::Managed => {
                out.push(row(Root, Owner::Relayctl, ROOT_WITH_KEY));
                out.push(row(Signing, Owner::Relayctl, TLS));
                out.push(row(Server, Owner::Relayctl, TLS));
            }
            CaMode::Custom => {
                out.push(row(Root, Owner::Relayctl, ROOT_BUNDLE));
                out.push(row(Signing, Owner::Relayctl, TLS));
                out.push(row(Server, Owner::Relayctl, TLS));
            }
            CaMode::Gloo => {
                out.push(row(Root, Owner::ManagementServer, ROOT_WITH_KEY));
                out.push(row(Signing, Owner::ManagementServer, TLS));
                out.push(row(Server, Owner::ManagementServer, TLS));
            }
            // The user's PKI issues everything; relayctl copies the server
            // certificate from its source and holds no CA key.
            CaMode::External => out.push(row(Server, Owner::Relayctl, TLS)),
        },
        Role::Workload | Role::Orphan => {
            out.push(row(Root, Owner::Relayctl, ROOT_BUNDLE));
            let client_owner = match client {
                ClientCertMode::Token => Owner::Agent,
                ClientCertMode::Preprovisioned => Owner::Relayctl,
                ClientCertMode::External if client_source => Owner::Relayctl,
                ClientCertMode::External => Owner::UsersPki,
            };
            if tokens {
                out.push(row(Token, Owner::Relayctl, TOKEN));
            }
            out.push(row(Client, client_owner, TLS));
            return out;
        }
    }
    if tokens {
        let owner = if ca == CaMode::Gloo {
            Owner::ManagementServer
        } else {
            Owner::Relayctl
        };
        out.push(row(Token, owner, TOKEN));
    }
    out
}

/// The product's registration of a workload cluster: a `KubernetesCluster`
/// named after it in the relay namespace of the management cluster. The
/// management server refuses the agent of a cluster without one.
pub mod registration {
    /// API group.
    pub const GROUP: &str = "admin.gloo.solo.io";
    /// API version.
    pub const VERSION: &str = "v2";
    /// Kind.
    pub const KIND: &str = "KubernetesCluster";
    /// Resource (plural) name.
    pub const PLURAL: &str = "kubernetesclusters";
    /// The CustomResourceDefinition that must be installed.
    pub const CRD: &str = "kubernetesclusters.admin.gloo.solo.io";

    /// How a registration is named in plans: `KubernetesCluster/cluster-1`.
    pub fn change_name(cluster: &str) -> String {
        format!("{KIND}/{cluster}")
    }

    /// Whether a plan change's name is a registration's (a Secret's name
    /// never holds a `/`).
    pub fn is_change_name(name: &str) -> bool {
        name.strip_prefix(KIND)
            .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// Name of the inventory Secret on the management cluster: which workload
/// clusters (and connections) this instance has written to, so that a cluster
/// whose manifest was removed can still be found and pruned.
pub fn inventory_secret(instance: &str) -> String {
    format!("relayctl-{instance}-inventory")
}

/// Name of the rotation record on the management cluster: the root and
/// token generations, and the CA rotation under way (phase, start times,
/// the old and new CA material) so that a crash or a rerun resumes it.
pub fn rotation_secret(instance: &str) -> String {
    format!("relayctl-{instance}-rotation")
}

/// The Secret names observation asks a cluster of `role` for by name,
/// besides what the label-scoped LIST returns: every relay Secret that
/// [`held`] says such a cluster can hold in this fleet's modes (whoever
/// writes it: the agent's, the management server's and a foreign Secret at
/// one of relayctl's names carry no label of the instance), and on mgmt the
/// inventory and the rotation record. Names a cluster of that role never holds are not asked for: a
/// workload never holds the signing or server Secret or the inventory, mgmt
/// never a client certificate. Orphans are asked what a workload holds.
pub fn observed_names(
    instance: &str,
    ca: CaMode,
    client: ClientCertMode,
    tokens: bool,
    role: Role,
) -> Vec<String> {
    let mut names: Vec<String> = held(ca, client, tokens, role, false)
        .into_iter()
        .map(|h| h.secret.name().to_owned())
        .collect();
    if role == Role::Management {
        names.push(inventory_secret(instance));
        names.push(rotation_secret(instance));
    }
    names
}

/// Of [`observed_names`], those that never carry the instance's label
/// because relayctl does not write them (the agent's client certificate,
/// the management server's Secrets in `gloo` mode, a certificate of the
/// user's PKI): a LIST by label never returns them, so observation may
/// read them alongside the LIST.
pub fn unlabelled_names(
    ca: CaMode,
    client: ClientCertMode,
    tokens: bool,
    role: Role,
) -> Vec<String> {
    held(ca, client, tokens, role, false)
        .into_iter()
        .filter(|h| h.owner != Owner::Relayctl)
        .map(|h| h.secret.name().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(rows: &[Held]) -> Vec<(&'static str, Owner, &'static [&'static str])> {
        rows.iter()
            .map(|h| (h.secret.name(), h.owner, h.keys))
            .collect()
    }

    /// DESIGN.md §2's table of CA modes, row by row.
    #[test]
    fn every_mode_holds_what_the_design_says() {
        use ClientCertMode::{External as ExtClient, Preprovisioned, Token as TokenMode};
        assert_eq!(
            names(&held(
                CaMode::Managed,
                TokenMode,
                true,
                Role::Management,
                false
            )),
            [
                (
                    "relay-root-tls-secret",
                    Owner::Relayctl,
                    &["ca.crt", "tls.key"][..]
                ),
                (
                    "relay-tls-signing-secret",
                    Owner::Relayctl,
                    &["tls.crt", "tls.key", "ca.crt"][..]
                ),
                (
                    "relay-server-tls-secret",
                    Owner::Relayctl,
                    &["tls.crt", "tls.key", "ca.crt"][..]
                ),
                (
                    "relay-identity-token-secret",
                    Owner::Relayctl,
                    &["token"][..]
                ),
            ]
        );
        assert_eq!(
            held(
                CaMode::Custom,
                Preprovisioned,
                true,
                Role::Management,
                false
            )[0]
            .keys,
            ["ca.crt"],
            "custom mode keeps the root key out of the cluster"
        );
        assert!(
            held(CaMode::Gloo, TokenMode, true, Role::Management, false)
                .iter()
                .all(|h| h.owner == Owner::ManagementServer)
        );
        assert_eq!(
            names(&held(
                CaMode::External,
                ExtClient,
                false,
                Role::Management,
                false
            )),
            [(
                "relay-server-tls-secret",
                Owner::Relayctl,
                &["tls.crt", "tls.key", "ca.crt"][..]
            )]
        );
        for (client, source, owner) in [
            (TokenMode, false, Owner::Agent),
            (Preprovisioned, false, Owner::Relayctl),
            (ExtClient, true, Owner::Relayctl),
            (ExtClient, false, Owner::UsersPki),
        ] {
            let rows = held(
                CaMode::Managed,
                client,
                client == TokenMode,
                Role::Workload,
                source,
            );
            assert_eq!(rows[0].secret, RelaySecret::Root);
            assert_eq!(rows[0].keys, ["ca.crt"]);
            assert_eq!(
                rows.last().map(|h| (h.secret, h.owner)),
                Some((RelaySecret::Client, owner))
            );
        }
    }

    #[test]
    fn names_are_the_products_and_round_trip() {
        for secret in RelaySecret::ALL {
            assert_eq!(RelaySecret::named(secret.name()), Some(secret));
            assert!(secret.name().starts_with("relay-"));
        }
        assert_eq!(inventory_secret("prod"), "relayctl-prod-inventory");
        assert_eq!(rotation_secret("prod"), "relayctl-prod-rotation");
        let names = |ca, client, tokens, role| observed_names("prod", ca, client, tokens, role);
        assert_eq!(
            names(
                CaMode::Managed,
                ClientCertMode::Token,
                true,
                Role::Management
            ),
            [
                "relay-root-tls-secret",
                "relay-tls-signing-secret",
                "relay-server-tls-secret",
                "relay-identity-token-secret",
                "relayctl-prod-inventory",
                "relayctl-prod-rotation"
            ]
        );
        assert_eq!(
            names(CaMode::Managed, ClientCertMode::Token, true, Role::Workload),
            [
                "relay-root-tls-secret",
                "relay-identity-token-secret",
                "relay-client-tls-secret"
            ],
            "a workload never holds the signing or server Secret or the inventory"
        );
        assert_eq!(
            names(
                CaMode::External,
                ClientCertMode::External,
                false,
                Role::Management
            ),
            [
                "relay-server-tls-secret",
                "relayctl-prod-inventory",
                "relayctl-prod-rotation"
            ]
        );
        assert_eq!(
            unlabelled_names(CaMode::Managed, ClientCertMode::Token, true, Role::Workload),
            ["relay-client-tls-secret"],
            "the agent writes it without relayctl's label"
        );
        assert_eq!(
            unlabelled_names(
                CaMode::Managed,
                ClientCertMode::Token,
                true,
                Role::Management
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            unlabelled_names(CaMode::Gloo, ClientCertMode::Token, true, Role::Management).len(),
            4,
            "gloo mode: the management server writes them all"
        );
    }
}
