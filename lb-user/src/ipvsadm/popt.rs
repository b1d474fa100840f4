//! Command-line splitting the way ipvsadm's option library (popt) does it, so that every
//! spelling ipvsadm accepts is accepted here, with the same meaning:
//!
//! - `--long value` and `--long=value`; long names must match exactly (no abbreviations);
//! - short options bundle (`-Ln`), and a short option's value may be attached (`-w3`, `-w=3`)
//!   or be the next word; a required value is taken even when it starts with `-`;
//! - the optional value of `-p`/`--persistent` is taken only from a next word that does not
//!   start with `-`;
//! - words that are not options ("leftovers", e.g. the three values of `--set`) may appear
//!   anywhere; `--` makes every later word a leftover.

/// How an option takes a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArgKind {
    None,
    Required,
    Optional,
}

/// Every option ipvsadm 1.31 knows, plus xvs's `--engine`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tag {
    AddService,
    EditService,
    DelService,
    Clear,
    List,
    Zero,
    AddServer,
    EditServer,
    DelServer,
    Set,
    Help,
    Version,
    Restore,
    Save,
    StartDaemon,
    StopDaemon,
    Tcp,
    Udp,
    Sctp,
    Fwmark,
    Scheduler,
    Persistent,
    Netmask,
    RealServer,
    Masquerading,
    Ipip,
    Gatewaying,
    Weight,
    UThreshold,
    LThreshold,
    Numeric,
    Connection,
    McastInterface,
    SyncId,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Sort,
    Exact,
    Ipv6,
    Ops,
    Pe,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNoCsum,
    TunCsum,
    TunRemCsum,
    /// xvs: mark which engine serves each service in listings.
    Engine,
}

pub(crate) struct OptSpec {
    pub long: &'static str,
    pub short: Option<char>,
    pub kind: ArgKind,
    pub tag: Tag,
}

const fn o(long: &'static str, short: Option<char>, kind: ArgKind, tag: Tag) -> OptSpec {
    OptSpec {
        long,
        short,
        kind,
        tag,
    }
}

use ArgKind::{None as N, Optional as O, Required as R};

/// The option table, in ipvsadm's order (the first match wins: `--list` is `-L`).
pub(crate) const OPTIONS: &[OptSpec] = &[
    o("add-service", Some('A'), N, Tag::AddService),
    o("edit-service", Some('E'), N, Tag::EditService),
    o("delete-service", Some('D'), N, Tag::DelService),
    o("clear", Some('C'), N, Tag::Clear),
    o("list", Some('L'), N, Tag::List),
    o("list", Some('l'), N, Tag::List),
    o("zero", Some('Z'), N, Tag::Zero),
    o("add-server", Some('a'), N, Tag::AddServer),
    o("edit-server", Some('e'), N, Tag::EditServer),
    o("delete-server", Some('d'), N, Tag::DelServer),
    o("set", None, N, Tag::Set),
    o("help", Some('h'), N, Tag::Help),
    o("version", Some('v'), N, Tag::Version),
    o("restore", Some('R'), N, Tag::Restore),
    o("save", Some('S'), N, Tag::Save),
    o("start-daemon", None, R, Tag::StartDaemon),
    o("stop-daemon", None, R, Tag::StopDaemon),
    o("tcp-service", Some('t'), R, Tag::Tcp),
    o("udp-service", Some('u'), R, Tag::Udp),
    o("sctp-service", None, R, Tag::Sctp),
    o("fwmark-service", Some('f'), R, Tag::Fwmark),
    o("scheduler", Some('s'), R, Tag::Scheduler),
    o("persistent", Some('p'), O, Tag::Persistent),
    o("netmask", Some('M'), R, Tag::Netmask),
    o("real-server", Some('r'), R, Tag::RealServer),
    o("masquerading", Some('m'), N, Tag::Masquerading),
    o("ipip", Some('i'), N, Tag::Ipip),
    o("gatewaying", Some('g'), N, Tag::Gatewaying),
    o("weight", Some('w'), R, Tag::Weight),
    o("u-threshold", Some('x'), R, Tag::UThreshold),
    o("l-threshold", Some('y'), R, Tag::LThreshold),
    o("numeric", Some('n'), N, Tag::Numeric),
    o("connection", Some('c'), N, Tag::Connection),
    o("mcast-interface", None, R, Tag::McastInterface),
    o("syncid", None, R, Tag::SyncId),
    o("timeout", None, N, Tag::Timeout),
    o("daemon", None, N, Tag::Daemon),
    o("stats", None, N, Tag::Stats),
    o("rate", None, N, Tag::Rate),
    o("thresholds", None, N, Tag::Thresholds),
    o("persistent-conn", None, N, Tag::PersistentConn),
    o("nosort", None, N, Tag::NoSort),
    o("sort", None, N, Tag::Sort),
    o("exact", Some('X'), N, Tag::Exact),
    o("ipv6", Some('6'), N, Tag::Ipv6),
    o("ops", Some('o'), N, Tag::Ops),
    o("pe", None, R, Tag::Pe),
    o("sched-flags", Some('b'), R, Tag::SchedFlags),
    o("mcast-group", None, R, Tag::McastGroup),
    o("mcast-port", None, R, Tag::McastPort),
    o("mcast-ttl", None, R, Tag::McastTtl),
    o("sync-maxlen", None, R, Tag::SyncMaxlen),
    o("tun-info", None, N, Tag::TunInfo),
    o("tun-type", None, R, Tag::TunType),
    o("tun-port", None, R, Tag::TunPort),
    o("tun-nocsum", None, N, Tag::TunNoCsum),
    o("tun-csum", None, N, Tag::TunCsum),
    o("tun-remcsum", None, N, Tag::TunRemCsum),
    o("engine", None, N, Tag::Engine),
];

/// Why the splitter stopped (popt's error codes, with popt's wording).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PoptError {
    /// POPT_ERROR_BADOPT
    UnknownOption,
    /// POPT_ERROR_NOARG
    MissingArgument,
    /// POPT_ERROR_UNWANTEDARG (`--stats=1`)
    UnwantedArgument,
}

impl PoptError {
    pub fn reason(self) -> &'static str {
        match self {
            PoptError::UnknownOption => "unknown option",
            PoptError::MissingArgument => "missing argument",
            PoptError::UnwantedArgument => "option does not take an argument",
        }
    }
}

/// One option and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Opt {
    pub tag: Tag,
    pub arg: Option<String>,
}

pub(crate) struct Popt<'a> {
    args: &'a [String],
    /// Index of the next word.
    next: usize,
    /// Inside a bundle of short options: (word index, byte offset of the next option).
    next_char: Option<(usize, usize)>,
    rest_leftover: bool,
    leftovers: Vec<String>,
}

impl<'a> Popt<'a> {
    pub fn new(args: &'a [String]) -> Self {
        Popt {
            args,
            next: 0,
            next_char: None,
            rest_leftover: false,
            leftovers: Vec::new(),
        }
    }

    /// The word popt blames for the last option or error (`poptBadOption`).
    pub fn bad_option(&self) -> String {
        self.next
            .checked_sub(1)
            .and_then(|i| self.args.get(i))
            .cloned()
            .unwrap_or_default()
    }

    /// Words that were not options, in order.
    pub fn take_leftovers(&mut self) -> Vec<String> {
        std::mem::take(&mut self.leftovers)
    }

    /// The next option, `Ok(None)` at the end.
    pub fn next_opt(&mut self) -> Result<Option<Opt>, PoptError> {
        loop {
            let mut long_arg: Option<String> = None;
            let spec: &OptSpec;
            if self.next_char.is_none() {
                if self.next == self.args.len() {
                    return Ok(None);
                }
                let word = &self.args[self.next];
                self.next += 1;
                if self.rest_leftover || !word.starts_with('-') || word == "-" {
                    self.leftovers.push(word.clone());
                    continue;
                }
                if word == "--" {
                    self.rest_leftover = true;
                    continue;
                }
                if let Some(body) = word.strip_prefix("--") {
                    let (name, arg) = match body.split_once('=') {
                        Some((n, a)) => (n, Some(a.to_string())),
                        None => (body, None),
                    };
                    spec = OPTIONS
                        .iter()
                        .find(|s| s.long == name)
                        .ok_or(PoptError::UnknownOption)?;
                    long_arg = arg;
                } else {
                    // No ipvsadm option is a one-dash long option: a bundle of short ones.
                    self.next_char = Some((self.next - 1, 1));
                    continue;
                }
            } else {
                let (wi, off) = self.next_char.take().expect("checked");
                let word = &self.args[wi];
                let c = word[off..].chars().next().ok_or(PoptError::UnknownOption)?;
                spec = OPTIONS
                    .iter()
                    .find(|s| s.short == Some(c))
                    .ok_or(PoptError::UnknownOption)?;
                let mut rest = off + c.len_utf8();
                if rest < word.len() {
                    if word.as_bytes()[rest] == b'=' {
                        rest += 1;
                    }
                    self.next_char = Some((wi, rest));
                }
            }

            let arg = match spec.kind {
                ArgKind::None => {
                    if long_arg.is_some() {
                        return Err(PoptError::UnwantedArgument);
                    }
                    None
                }
                ArgKind::Required | ArgKind::Optional => {
                    if long_arg.is_some() {
                        long_arg
                    } else if let Some((wi, off)) = self.next_char.take() {
                        Some(self.args[wi][off..].to_string())
                    } else if self.next == self.args.len() {
                        if spec.kind == ArgKind::Required {
                            return Err(PoptError::MissingArgument);
                        }
                        None
                    } else if spec.kind == ArgKind::Optional
                        && self.args[self.next].starts_with('-')
                    {
                        None
                    } else {
                        self.next += 1;
                        Some(self.args[self.next - 1].clone())
                    }
                }
            };
            return Ok(Some(Opt { tag: spec.tag, arg }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Split = (Vec<(Tag, Option<String>)>, Vec<String>, Option<PoptError>);

    fn split(words: &[&str]) -> Split {
        let args: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        let mut p = Popt::new(&args);
        let mut opts = Vec::new();
        let err = loop {
            match p.next_opt() {
                Ok(Some(o)) => opts.push((o.tag, o.arg)),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        (opts, p.take_leftovers(), err)
    }

    fn s(x: &str) -> Option<String> {
        Some(x.to_string())
    }

    #[test]
    fn bundles_attached_values_and_long_forms() {
        let (o, l, e) = split(&["-Ln", "-w3", "-x=5", "--weight=7", "--scheduler", "rr"]);
        assert_eq!(e, None);
        assert!(l.is_empty());
        assert_eq!(
            o,
            vec![
                (Tag::List, None),
                (Tag::Numeric, None),
                (Tag::Weight, s("3")),
                (Tag::UThreshold, s("5")),
                (Tag::Weight, s("7")),
                (Tag::Scheduler, s("rr")),
            ]
        );
        let (o, _, _) = split(&["-At", "10.0.0.1:80"]);
        assert_eq!(
            o,
            vec![(Tag::AddService, None), (Tag::Tcp, s("10.0.0.1:80"))]
        );
    }

    #[test]
    fn optional_values_and_leftovers() {
        let (o, _, _) = split(&["-p", "-s", "rr"]);
        assert_eq!(o, vec![(Tag::Persistent, None), (Tag::Scheduler, s("rr"))]);
        let (o, _, _) = split(&["-p", "600"]);
        assert_eq!(o, vec![(Tag::Persistent, s("600"))]);
        let (o, _, _) = split(&["-p"]);
        assert_eq!(o, vec![(Tag::Persistent, None)]);
        let (o, l, _) = split(&["--set", "1", "2", "--", "-3"]);
        assert_eq!(o, vec![(Tag::Set, None)]);
        assert_eq!(l, vec!["1", "2", "-3"]);
        // A required value is taken even when it looks like an option.
        let (o, _, _) = split(&["-t", "-s"]);
        assert_eq!(o, vec![(Tag::Tcp, s("-s"))]);
    }

    #[test]
    fn errors() {
        assert_eq!(split(&["--bogus"]).2, Some(PoptError::UnknownOption));
        assert_eq!(split(&["--lis"]).2, Some(PoptError::UnknownOption));
        assert_eq!(split(&["-Lq"]).2, Some(PoptError::UnknownOption));
        assert_eq!(split(&["-t"]).2, Some(PoptError::MissingArgument));
        assert_eq!(split(&["--stats=1"]).2, Some(PoptError::UnwantedArgument));
    }
}
