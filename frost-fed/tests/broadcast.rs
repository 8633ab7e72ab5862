//! Echo broadcast: an honest sender's payload reaches everyone identically; a sender
//! that shows different members different payloads is caught with a proof anyone can
//! check, and no two members deliver different payloads.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::{BTreeMap, VecDeque};

use common::{keypair, member};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};
use tenure_frost_fed::{
    BroadcastTag, MemberId,
    broadcast::{
        BroadcastMessage, BroadcastOutput, EchoBroadcast, SignedDigest, check_equivocation,
    },
    share::member_sign,
};

struct Run {
    delivered: BTreeMap<MemberId, Vec<Vec<u8>>>,
    equivocators: BTreeMap<MemberId, MemberId>,
}

fn run(
    n: u8,
    first: Vec<(MemberId, MemberId, BroadcastMessage)>,
    nodes: &mut BTreeMap<MemberId, EchoBroadcast>,
) -> Run {
    let mut queue: VecDeque<(MemberId, MemberId, BroadcastMessage)> = first.into();
    let mut result = Run {
        delivered: BTreeMap::new(),
        equivocators: BTreeMap::new(),
    };
    let _ = n;
    while let Some((from, to, msg)) = queue.pop_front() {
        let Some(node) = nodes.get_mut(&to) else {
            continue;
        };
        for output in node.handle(from, msg) {
            match output {
                BroadcastOutput::Send { to: next, msg } => queue.push_back((to, next, msg)),
                BroadcastOutput::Deliver { payload, .. } => {
                    result.delivered.entry(to).or_default().push(payload)
                }
                BroadcastOutput::Equivocation { sender, proof } => {
                    assert_eq!(check_equivocation(&proof), Some(sender));
                    result.equivocators.insert(to, sender);
                }
            }
        }
    }
    result
}

fn nodes(n: u8) -> BTreeMap<MemberId, EchoBroadcast> {
    let members: Vec<MemberId> = (1..=n).map(member).collect();
    (1..=n)
        .map(|s| (member(s), EchoBroadcast::new(keypair(s), members.clone())))
        .collect()
}

#[test]
fn an_honest_senders_payload_is_delivered_by_everyone() {
    let mut nodes = nodes(7);
    assert_eq!(nodes[&member(1)].quorum(), 5);
    let sender = member(1);
    let out = nodes
        .get_mut(&sender)
        .unwrap()
        .broadcast(BroadcastTag([1; 32]), b"round 1".to_vec());
    let first = out
        .into_iter()
        .filter_map(|o| match o {
            BroadcastOutput::Send { to, msg } => Some((sender, to, msg)),
            _ => None,
        })
        .collect();
    let result = run(7, first, &mut nodes);
    assert!(result.equivocators.is_empty());
    for s in 2..=7 {
        assert_eq!(result.delivered[&member(s)], vec![b"round 1".to_vec()]);
    }
}

#[test]
fn an_equivocating_sender_is_proven_and_no_two_members_deliver_differently() {
    let mut nodes = nodes(4);
    let sender = member(1);
    let tag = [9; 32];
    let signed = |payload: &[u8]| {
        let digest: [u8; 32] = Sha256::digest(payload).into();
        let mut h = Sha256::new();
        h.update(b"tenure/frost-fed/broadcast/v1");
        h.update(sender.0);
        h.update(tag);
        h.update(digest);
        let sig = member_sign(&keypair(1), h.finalize().into());
        BroadcastMessage::Send {
            tag: BroadcastTag(tag),
            payload: ByteBuf::from(payload.to_vec()),
            signature: ByteBuf::from(sig.to_vec()),
        }
    };
    // Member 1 shows members 2 and 3 one payload, member 4 another.
    let first = vec![
        (sender, member(2), signed(b"A")),
        (sender, member(3), signed(b"A")),
        (sender, member(4), signed(b"B")),
    ];
    let result = run(4, first, &mut nodes);
    for s in 2..=4 {
        assert_eq!(
            result.equivocators.get(&member(s)),
            Some(&sender),
            "member {s} did not catch it"
        );
    }
    let delivered: Vec<&Vec<u8>> = result.delivered.values().flatten().collect();
    assert!(
        delivered.windows(2).all(|w| w[0] == w[1]),
        "members delivered different payloads"
    );
    // A forged echo (not signed by the sender) is ignored.
    let forged = BroadcastMessage::Echo(SignedDigest {
        sender,
        tag: BroadcastTag([7; 32]),
        digest: [1; 32],
        signature: ByteBuf::from(vec![0; 64]),
    });
    assert!(
        nodes
            .get_mut(&member(2))
            .unwrap()
            .handle(member(3), forged)
            .is_empty()
    );
}

#[test]
fn a_member_broadcasting_without_end_cannot_evict_anothers_broadcast_in_flight() {
    let mut nodes = nodes(4);
    let honest = member(1);
    let out = nodes
        .get_mut(&honest)
        .unwrap()
        .broadcast(BroadcastTag([1; 32]), b"round 1".to_vec());
    let first: Vec<(MemberId, MemberId, BroadcastMessage)> = out
        .into_iter()
        .filter_map(|o| match o {
            BroadcastOutput::Send { to, msg } => Some((honest, to, msg)),
            _ => None,
        })
        .collect();
    // Member 2 has the honest payload, and its echoes are still on their way...
    let (to_two, rest): (Vec<_>, Vec<_>) =
        first.into_iter().partition(|(_, to, _)| *to == member(2));
    let mut later = rest;
    for (from, to, msg) in to_two {
        for output in nodes.get_mut(&to).unwrap().handle(from, msg) {
            if let BroadcastOutput::Send { to: next, msg } = output {
                later.push((to, next, msg));
            }
        }
    }
    // ...when member 4 floods it with 10,000 broadcasts of its own, each validly
    // signed. A global bound of 4,096 instances evicted the honest one.
    let flooder = member(4);
    for i in 0..10_000u32 {
        let mut tag = [0u8; 32];
        tag[..4].copy_from_slice(&i.to_be_bytes());
        let payload = i.to_be_bytes().to_vec();
        let digest: [u8; 32] = Sha256::digest(&payload).into();
        let mut h = Sha256::new();
        h.update(b"tenure/frost-fed/broadcast/v1");
        h.update(flooder.0);
        h.update(tag);
        h.update(digest);
        let sig = member_sign(&keypair(4), h.finalize().into());
        let msg = BroadcastMessage::Send {
            tag: BroadcastTag(tag),
            payload: ByteBuf::from(payload),
            signature: ByteBuf::from(sig.to_vec()),
        };
        let _ = nodes.get_mut(&member(2)).unwrap().handle(flooder, msg);
    }
    // The rest of the honest broadcast arrives: everyone delivers it.
    let result = run(4, later, &mut nodes);
    for s in 2..=4 {
        assert_eq!(
            result.delivered.get(&member(s)),
            Some(&vec![b"round 1".to_vec()]),
            "member {s} lost the honest broadcast"
        );
    }
}

/// Issue 13: an echo identical to a signed digest already checked is not checked
/// again (n² signature checks a round, not n³). The shortcut must not let an echo that
/// copies the digest under another signature through: such echoes are still checked,
/// count for nothing, and honest echoes still deliver.
#[test]
fn an_echo_copying_a_checked_digest_under_a_forged_signature_counts_for_nothing() {
    let mut nodes = nodes(4);
    assert_eq!(nodes[&member(2)].quorum(), 3);
    let sender = member(1);
    let out = nodes
        .get_mut(&sender)
        .unwrap()
        .broadcast(BroadcastTag([3; 32]), b"commitments".to_vec());
    let send_to_2 = out
        .iter()
        .find_map(|o| match o {
            BroadcastOutput::Send { to, msg } if *to == member(2) => Some(msg.clone()),
            _ => None,
        })
        .unwrap();
    let BroadcastMessage::Send { tag, payload, .. } = &send_to_2 else {
        panic!("not a send");
    };
    let genuine = SignedDigest {
        sender,
        tag: *tag,
        digest: Sha256::digest(payload).into(),
        signature: ByteBuf::new(),
    };
    let node = nodes.get_mut(&member(2)).unwrap();
    let delivered = |outs: &[BroadcastOutput]| {
        outs.iter()
            .any(|o| matches!(o, BroadcastOutput::Deliver { .. }))
    };
    // Member 2 checks the sender's signature and echoes: one agreeing echo (its own).
    let outs = node.handle(sender, send_to_2.clone());
    assert!(!delivered(&outs));
    // Members 3 and 4 "echo" the same digest under signatures the sender never made.
    for (forger, junk) in [(3u8, [0u8; 64]), (4, [7u8; 64])] {
        let forged = SignedDigest {
            signature: ByteBuf::from(junk.to_vec()),
            ..genuine.clone()
        };
        let outs = node.handle(member(forger), BroadcastMessage::Echo(forged));
        assert!(!delivered(&outs), "a forged echo counted toward the quorum");
    }
    // Honest echoes of the sender's real signature (already checked) deliver.
    let real = match &send_to_2 {
        BroadcastMessage::Send { signature, .. } => SignedDigest {
            signature: signature.clone(),
            ..genuine
        },
        BroadcastMessage::Echo(_) => unreachable!(),
    };
    let outs = node.handle(member(3), BroadcastMessage::Echo(real.clone()));
    assert!(!delivered(&outs));
    let outs = node.handle(sender, BroadcastMessage::Echo(real));
    assert!(delivered(&outs), "honest echoes no longer deliver");
}

#[test]
fn with_the_quorum_scoped_to_a_roster_a_silent_outsider_holds_nothing_up_and_its_echo_counts_for_nothing()
 {
    // Seven members know each other; the session's roster is members 1 to 4. Members
    // 5 to 7 (enrolled, not selected) are silent: with the quorum over all seven (5
    // echoes) the four could not deliver; over the roster (3 of 4) they do.
    let mut nodes = nodes(7);
    let roster: std::collections::BTreeSet<MemberId> = (1..=4).map(member).collect();
    for node in nodes.values_mut() {
        node.count_only(roster.clone());
    }
    assert_eq!(nodes[&member(1)].quorum(), 3);
    let sender = member(1);
    let first: Vec<_> = nodes
        .get_mut(&sender)
        .unwrap()
        .broadcast(BroadcastTag([2; 32]), b"round 1".to_vec())
        .into_iter()
        .filter_map(|o| match o {
            BroadcastOutput::Send { to, msg } => Some((sender, to, msg)),
            _ => None,
        })
        // The outsiders are silent: nothing reaches them.
        .filter(|(_, to, _)| roster.contains(to))
        .collect();
    let mut roster_nodes: BTreeMap<MemberId, EchoBroadcast> = nodes
        .into_iter()
        .filter(|(m, _)| roster.contains(m))
        .collect();
    let result = run(7, first, &mut roster_nodes);
    for s in 2..=4 {
        assert_eq!(result.delivered[&member(s)], vec![b"round 1".to_vec()]);
    }

    // An outsider's echo is taken but not counted: with the sender's own echo and
    // one outsider's, a member still lacks the roster's quorum.
    let mut nodes = self::nodes(7);
    for node in nodes.values_mut() {
        node.count_only(roster.clone());
    }
    let send = nodes
        .get_mut(&sender)
        .unwrap()
        .broadcast(BroadcastTag([3; 32]), b"round 1".to_vec())
        .into_iter()
        .find_map(|o| match o {
            BroadcastOutput::Send { to, msg } if to == member(2) => Some(msg),
            _ => None,
        })
        .unwrap();
    let two = nodes.get_mut(&member(2)).unwrap();
    assert!(
        !two.handle(sender, send.clone())
            .iter()
            .any(|o| matches!(o, BroadcastOutput::Deliver { .. }))
    );
    let BroadcastMessage::Send {
        tag,
        payload,
        signature,
    } = send
    else {
        unreachable!()
    };
    let echo = BroadcastMessage::Echo(SignedDigest {
        sender,
        tag,
        digest: Sha256::digest(&payload).into(),
        signature,
    });
    // Member 2 holds its own echo; with the sender's it has two of the roster's
    // three. An outsider's echo would make three if it counted: it does not.
    for (from, delivers) in [(sender, false), (member(6), false), (member(3), true)] {
        let delivered = two
            .handle(from, echo.clone())
            .into_iter()
            .any(|o| matches!(o, BroadcastOutput::Deliver { .. }));
        assert_eq!(delivered, delivers, "echo from {from}");
    }
}
