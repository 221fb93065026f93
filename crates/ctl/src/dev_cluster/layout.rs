//! Cluster shape of `dev-cluster` (tools.md §6): which process gets which ports and buckets.
//!
//! Bucket b lives on nodes `(b + j) mod nodes` for j in 0..replicas, so with nodes > replicas
//! no node holds every bucket, as in production. Ports: proxy B+5 (web B+8), node i at
//! B+10(i+1), backup j at B+10(nodes+1+j), each with its web port at +3.

use std::fmt::Write as _;

/// What a process is in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Proxy,
    Main,
    Backup,
}

/// One process of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub role: Role,
    pub port: u16,
    pub webport: u16,
    /// Buckets served as a main (empty for the proxy and for backups, which serve all).
    pub buckets: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub host: String,
    pub numbucket: u32,
    /// N of the proxy: replicas per key.
    pub replicas: usize,
    /// W of the proxy: a majority of the replicas, so one slow replica never fails a write.
    pub w: usize,
    /// R of the proxy.
    pub r: usize,
    pub proxy: Member,
    pub nodes: Vec<Member>,
    pub backups: Vec<Member>,
}

impl Layout {
    /// Validates the shape options; the error text names the offending flag.
    pub fn new(
        nodes: usize,
        replicas: usize,
        numbucket: u32,
        backups: usize,
        base_port: u16,
        host: &str,
    ) -> Result<Layout, String> {
        if numbucket != 16 && numbucket != 256 {
            return Err(format!("--buckets must be 16 or 256, not {numbucket}"));
        }
        if replicas == 0 {
            return Err("--replicas must be at least 1".into());
        }
        if nodes <= replicas {
            return Err(format!(
                "--nodes ({nodes}) must be greater than --replicas ({replicas}), so that no node holds every bucket"
            ));
        }
        if nodes > numbucket as usize {
            return Err(format!(
                "--nodes ({nodes}) must be at most --buckets ({numbucket}), so that every node serves a bucket"
            ));
        }
        if host.is_empty() {
            return Err("--host must not be empty".into());
        }
        // The last port used is the last backup's (or node's) web port.
        let last = u32::from(base_port) + 10 * (nodes + 1 + backups) as u32 + 3;
        if base_port == 0 || last > u32::from(u16::MAX) {
            return Err(format!(
                "--base-port {base_port} leaves no room for {} processes (ports up to {last})",
                nodes + backups + 1
            ));
        }
        let at = |slot: usize| base_port + (10 * slot) as u16;
        let mut owned: Vec<Vec<u32>> = vec![Vec::new(); nodes];
        for b in 0..numbucket {
            for j in 0..replicas {
                owned[(b as usize + j) % nodes].push(b);
            }
        }
        let nodes_v = owned
            .into_iter()
            .enumerate()
            .map(|(i, mut buckets)| {
                buckets.sort_unstable();
                Member {
                    name: format!("node{i}"),
                    role: Role::Main,
                    port: at(i + 1),
                    webport: at(i + 1) + 3,
                    buckets,
                }
            })
            .collect();
        let backups_v = (0..backups)
            .map(|j| Member {
                name: format!("backup{j}"),
                role: Role::Backup,
                port: at(nodes + 1 + j),
                webport: at(nodes + 1 + j) + 3,
                buckets: Vec::new(),
            })
            .collect();
        Ok(Layout {
            host: host.to_string(),
            numbucket,
            replicas,
            w: replicas / 2 + 1,
            r: 1,
            proxy: Member {
                name: "proxy".into(),
                role: Role::Proxy,
                port: base_port + 5,
                webport: base_port + 8,
                buckets: Vec::new(),
            },
            nodes: nodes_v,
            backups: backups_v,
        })
    }

    /// Storage processes: mains, then backups.
    pub fn storage(&self) -> impl Iterator<Item = &Member> {
        self.nodes.iter().chain(self.backups.iter())
    }

    /// Every process, proxy first.
    pub fn all(&self) -> impl Iterator<Item = &Member> {
        std::iter::once(&self.proxy).chain(self.storage())
    }

    /// `host:port`, bracketing an IPv6 literal.
    pub fn addr(&self, port: u16) -> String {
        if self.host.contains(':') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }

    /// Bucket id as written in route.yaml: one hex digit per 4 bits of the bucket width.
    pub fn bucket_id(&self, b: u32) -> String {
        if self.numbucket == 256 {
            format!("{b:02x}")
        } else {
            format!("{b:x}")
        }
    }

    /// Every port to be bound, with the name used in the "in use" error.
    pub fn ports(&self) -> Vec<(u16, String)> {
        self.all()
            .flat_map(|m| {
                [
                    (m.port, m.name.clone()),
                    (m.webport, format!("{} web", m.name)),
                ]
            })
            .collect()
    }

    /// The whole cluster's route.yaml; the proxy and every node get the same file, since a
    /// node serves the buckets listed under its own address.
    pub fn route_yaml(&self) -> String {
        let mut s = String::from(
            "# Written by beansctl dev-cluster. Bucket b lives on nodes (b + j) mod nodes, j < replicas.\n",
        );
        let _ = writeln!(s, "numbucket: {}", self.numbucket);
        s.push_str("main:\n");
        for n in &self.nodes {
            let ids: Vec<String> = n
                .buckets
                .iter()
                .map(|&b| format!("\"{}\"", self.bucket_id(b)))
                .collect();
            let _ = writeln!(s, "- addr: {}", self.addr(n.port));
            let _ = writeln!(s, "  buckets: [{}]", ids.join(", "));
        }
        if self.backups.is_empty() {
            s.push_str("backup: []\n");
        } else {
            s.push_str("backup:\n");
            for b in &self.backups {
                let _ = writeln!(s, "- {}", self.addr(b.port));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(m: &Member) -> String {
        m.buckets
            .iter()
            .map(|b| format!("{b:x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn default_layout_is_the_spec_table() {
        let l = Layout::new(5, 3, 16, 1, 7900, "127.0.0.1").unwrap();
        assert_eq!((l.proxy.port, l.proxy.webport), (7905, 7908));
        let want = [
            ("node0", 7910, "0 3 4 5 8 9 a d e f"),
            ("node1", 7920, "0 1 4 5 6 9 a b e f"),
            ("node2", 7930, "0 1 2 5 6 7 a b c f"),
            ("node3", 7940, "1 2 3 6 7 8 b c d"),
            ("node4", 7950, "2 3 4 7 8 9 c d e"),
        ];
        assert_eq!(l.nodes.len(), 5);
        for (n, (name, port, buckets)) in l.nodes.iter().zip(want) {
            assert_eq!((n.name.as_str(), n.port, n.webport), (name, port, port + 3));
            assert_eq!(hex(n), buckets, "{name}");
        }
        assert_eq!(l.backups.len(), 1);
        assert_eq!(
            (
                l.backups[0].name.as_str(),
                l.backups[0].port,
                l.backups[0].webport
            ),
            ("backup0", 7960, 7963)
        );
        assert_eq!((l.replicas, l.w, l.r), (3, 2, 1));
        assert_eq!(l.ports().len(), 14);
        assert_eq!(l.ports()[3], (7913, "node0 web".to_string()));
    }

    #[test]
    fn every_bucket_on_replicas_nodes_and_no_node_has_all() {
        for (nodes, replicas, nb) in [(5, 3, 16), (4, 3, 16), (2, 1, 16), (7, 2, 256)] {
            let l = Layout::new(nodes, replicas, nb, 2, 20000, "127.0.0.1").unwrap();
            for b in 0..nb {
                let holders = l.nodes.iter().filter(|n| n.buckets.contains(&b)).count();
                assert_eq!(holders, replicas, "bucket {b} in {nodes}/{replicas}/{nb}");
            }
            assert!(l.nodes.iter().all(|n| (n.buckets.len() as u32) < nb));
            assert_eq!(l.backups[1].port, 20000 + 10 * (nodes as u16 + 2));
        }
    }

    #[test]
    fn route_yaml_lists_quoted_hex_ids() {
        let l = Layout::new(5, 3, 16, 1, 7900, "127.0.0.1").unwrap();
        let y = l.route_yaml();
        assert!(y.contains("numbucket: 16\n"), "{y}");
        assert!(y.contains(
            "- addr: 127.0.0.1:7940\n  buckets: [\"1\", \"2\", \"3\", \"6\", \"7\", \"8\", \"b\", \"c\", \"d\"]\n"
        ), "{y}");
        assert!(y.ends_with("backup:\n- 127.0.0.1:7960\n"), "{y}");
        let l = Layout::new(5, 3, 256, 0, 7900, "::1").unwrap();
        let y = l.route_yaml();
        assert!(
            y.contains("- addr: [::1]:7910\n  buckets: [\"00\", \"03\", "),
            "{y}"
        );
        assert!(y.ends_with("backup: []\n"), "{y}");
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert!(Layout::new(3, 3, 16, 1, 7900, "127.0.0.1")
            .unwrap_err()
            .contains("--nodes (3) must be greater than --replicas (3)"));
        assert!(Layout::new(5, 0, 16, 1, 7900, "h").is_err());
        assert!(Layout::new(5, 3, 1, 1, 7900, "h").is_err());
        assert!(Layout::new(17, 3, 16, 1, 7900, "h").is_err());
        assert!(Layout::new(5, 3, 16, 1, 65500, "h")
            .unwrap_err()
            .contains("--base-port 65500"));
        assert!(Layout::new(5, 3, 16, 1, 0, "h").is_err());
    }
}
