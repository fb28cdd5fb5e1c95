//! Adversaries: floods, selection steering, lies and withheld messages, commitment grinding.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tracing::{trace, warn};

use super::*;
use crate::answers::Corpus;
use crate::scenario::{AnswerCtx, Behaviour, Lie};
use rakis_core::consensus::{Commit, Commitment, ConsensusParams, Salt, Submission};
use rakis_core::engine::GenerationJob;
use rakis_core::protocol::{CommitMsg, RevealMsg};
use rakis_core::{InferenceRequest, Message, NodeId, RequestId};

impl Simulation {
    /// A flooder's next request, to every node.
    pub(super) fn flood(&mut self, from: usize) {
        let Behaviour::Flood {
            per_second,
            max_time_ms,
        } = self.nodes[from].behaviour
        else {
            return;
        };
        let n = self.flood_ids.len();
        let mut request = InferenceRequest::new(
            self.sc.corpus.topic(n % self.sc.corpus.len()).prompt,
            vec![MODEL.to_string()],
            self.nodes[from].id,
            self.local(from),
        );
        request.nonce = mix(self.sc.seed ^ 0xF100D, (from * 1_000_000 + n) as u64);
        request.frame = self.sc.frame.clone();
        request.frame.max_time_ms = max_time_ms;
        self.flood_ids.insert(request.id());
        self.broadcast(from, Message::Request(request));
        let next = self.now + (1_000 / u64::from(per_second.max(1))).max(1);
        if next <= self.last_deadline() {
            self.push(next, Ev::Flood { from });
        }
    }

    /// A steering group publishes the subset of its held reveals under which one of its members
    /// is selected (the largest such subset; all of them when there is none).
    pub(super) fn steer(&mut self, group: u32, id: RequestId) {
        let members: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                matches!(self.nodes[i].behaviour, Behaviour::SteerSelection { group: g } if g == group)
                    && self.nodes[i].steer_held.contains_key(&id)
            })
            .collect();
        if members.is_empty() {
            return;
        }
        // What the group saw: every commit and reveal logged by any member.
        let mut commits: BTreeMap<(NodeId, Commitment), Commit> = BTreeMap::new();
        let mut reveals: BTreeMap<NodeId, RevealMsg> = BTreeMap::new();
        for &i in &members {
            for m in self.nodes[i].log.get(&id).into_iter().flatten() {
                match m.message() {
                    Message::Commit(c) => {
                        commits.insert((c.commit.node, c.commit.commitment), c.commit.clone());
                    }
                    Message::Reveal(r) => {
                        reveals.entry(r.reveal.node).or_insert_with(|| r.clone());
                    }
                    _ => {}
                }
            }
        }
        let held: Vec<RevealMsg> = members
            .iter()
            .filter_map(|&i| self.nodes[i].steer_held.get(&id).cloned())
            .collect();
        let member_ids: BTreeSet<NodeId> = members.iter().map(|&i| self.nodes[i].id).collect();
        let commits: Vec<Commit> = commits.into_values().collect();
        let params = ConsensusParams::from_frame(&self.sc.frame).ok();
        let selected_member = |subset: &[&RevealMsg]| -> bool {
            let Some(params) = &params else {
                return false;
            };
            let submissions: Vec<Submission> = reveals
                .values()
                .filter(|r| !member_ids.contains(&r.reveal.node))
                .chain(subset.iter().copied())
                .map(|r| Submission {
                    reveal: r.reveal.clone(),
                    reembedding: Some(r.reveal.embedding.clone()),
                    sampling_fault: None,
                })
                .collect();
            rakis_core::consensus::evaluate(&id, params, &commits, &submissions)
                .ok()
                .and_then(|o| o.selected().map(|s| member_ids.contains(&s.node)))
                .unwrap_or(false)
        };
        // Subsets by decreasing size (then by mask): reveal as many as the steering allows.
        let k = held.len().min(16);
        let mut masks: Vec<u32> = (1..(1u32 << k)).collect();
        masks.sort_by_key(|m| (std::cmp::Reverse(m.count_ones()), *m));
        let chosen = masks
            .into_iter()
            .find(|&m| {
                let subset: Vec<&RevealMsg> = (0..k)
                    .filter(|j| m & (1 << j) != 0)
                    .map(|j| &held[j])
                    .collect();
                selected_member(&subset)
            })
            .unwrap_or((1u32 << k) - 1);
        for (j, &i) in members.iter().enumerate() {
            let Some(r) = self.nodes[i].steer_held.remove(&id) else {
                continue;
            };
            if j < k && chosen & (1 << j) != 0 {
                self.broadcast(i, Message::Reveal(r));
            }
        }
    }

    /// Node `i`'s answer to `job`: text, token ids (with a model; none for scripted wording)
    /// and how it ended.
    pub(super) fn answer(
        &mut self,
        i: usize,
        job: &GenerationJob,
    ) -> (String, Vec<u32>, FinishReason) {
        let Some(&k) = self.by_id.get(&job.request_id) else {
            let text = Corpus::garbage(&mut StdRng::seed_from_u64(seed_u64(&job.seed)));
            return (text, Vec::new(), FinishReason::Eos);
        };
        let prompt = self.reqs[k].prompt;
        let mut rng = StdRng::seed_from_u64(seed_u64(&job.seed));
        let corpus = &self.sc.corpus;
        // With a model, the honest answer is its generation with this node's seed.
        let generated = self.sc.model.as_ref().and_then(|m| match m.0.generate(job) {
            Ok(g) => Some(g),
            Err(e) => {
                warn!(node = i, k, error = %e, "the model did not generate; scripted wording instead");
                None
            }
        });
        let honest = |rng: &mut StdRng| match &generated {
            Some(g) => g.text.clone(),
            None => corpus.honest(prompt, rng),
        };
        let (text, is_honest) = match &self.nodes[i].behaviour {
            Behaviour::Honest
            | Behaviour::Replay { .. }
            | Behaviour::Equivocate
            | Behaviour::EquivocateSplit
            | Behaviour::RevealMismatch
            | Behaviour::WithholdReveal
            | Behaviour::LateCommit { .. }
            | Behaviour::GrindSalt { .. }
            | Behaviour::SteerSelection { .. }
            | Behaviour::Flood { .. }
            | Behaviour::WrongEmbedding => (honest(&mut rng), true),
            Behaviour::Freerider | Behaviour::Garbage => (Corpus::garbage(&mut rng), false),
            Behaviour::CopyPriorAnswer => match self.nodes[i].seen_answers.get(&prompt) {
                Some(t) => (t.clone(), false),
                None => (Corpus::garbage(&mut rng), false),
            },
            Behaviour::OffTopic => (corpus.off_topic(prompt, &mut rng), false),
            Behaviour::Truncated { percent } => {
                (Corpus::truncated(&honest(&mut rng), *percent), false)
            }
            Behaviour::FactSwap => (corpus.fact_swapped(prompt, &honest(&mut rng)), false),
            Behaviour::Collude { group, lie } => {
                let mut shared = StdRng::seed_from_u64(mix(k as u64, u64::from(*group)));
                let text = match lie {
                    Lie::OffTopic => corpus.off_topic(prompt, &mut shared),
                    Lie::Garbage => Corpus::garbage(&mut shared),
                    Lie::FactSwap => corpus.fact_swapped(prompt, &honest(&mut shared)),
                };
                (text, false)
            }
            Behaviour::Custom(f) => (
                f(&AnswerCtx {
                    request: k,
                    prompt,
                    node: i,
                    seed: seed_u64(&job.seed),
                }),
                false,
            ),
        };
        // A rewrite that changed nothing (no fact to swap in a real model's answer, a prefix
        // as long as the answer) is an honest answer: reported as such, not as a lie.
        let unchanged = !is_honest && generated.as_ref().is_some_and(|g| g.text == text);
        if unchanged {
            self.unchanged_lies.insert(k);
        }
        if is_honest || unchanged {
            self.honest_texts.insert((k, text.clone()));
        }
        trace!(node = i, k, "answer");
        match (&generated, &self.sc.model) {
            (Some(g), _) if g.text == text => (text, g.token_ids.clone(), g.finish),
            // A rewritten answer claims to end where it ends, with the ids of its text.
            (_, Some(m)) => {
                let ids = m.0.encode(&text).unwrap_or_default();
                (text, ids, FinishReason::Eos)
            }
            (_, None) => (text, Vec::new(), FinishReason::Eos),
        }
    }

    /// A message leaving node `i`, through its behaviour.
    pub(super) fn outgoing(&mut self, i: usize, m: Message) {
        match (&self.nodes[i].behaviour, m) {
            (Behaviour::WithholdReveal, Message::Reveal(_)) => {}
            (Behaviour::RevealMismatch, Message::Reveal(mut r)) => {
                r.reveal.output.push_str(" Actually, it is something else.");
                let r = self.resign_reveal(i, r);
                self.broadcast(i, Message::Reveal(r));
            }
            (Behaviour::Freerider, Message::Reveal(r)) => {
                self.nodes[i].held_reveal.insert(r.reveal.request_id, r);
            }
            (Behaviour::Equivocate, Message::Commit(c)) => {
                let mut second = c.clone();
                second.commit.commitment =
                    Commitment(rakis_core::consensus::sha256(&c.commit.commitment.0).0);
                let second = self.resign_commit(i, second);
                self.broadcast(i, Message::Commit(c));
                self.broadcast(i, Message::Commit(second));
            }
            (Behaviour::EquivocateSplit, Message::Commit(c)) => {
                let mut second = c.clone();
                second.commit.commitment =
                    Commitment(rakis_core::consensus::sha256(&c.commit.commitment.0).0);
                let second = self.resign_commit(i, second);
                self.broadcast_where(i, Message::Commit(c), |to| to % 2 == 0);
                self.broadcast_where(i, Message::Commit(second), |to| to % 2 == 1);
            }
            (Behaviour::LateCommit { after_ms }, Message::Commit(c)) => {
                let at = self
                    .by_id
                    .get(&c.commit.request_id)
                    .map(|&k| self.reqs[k].deadline)
                    .unwrap_or(self.now)
                    + after_ms;
                self.push(
                    at,
                    Ev::Send {
                        from: i,
                        msg: Message::Commit(c),
                    },
                );
            }
            (Behaviour::GrindSalt { tries }, Message::Commit(c)) => {
                let tries = *tries;
                let c = self.grind(i, c, tries);
                let c = self.resign_commit(i, c);
                self.broadcast(i, Message::Commit(c));
            }
            (Behaviour::GrindSalt { .. }, Message::Reveal(mut r)) => {
                if let Some(salt) = self.nodes[i].ground.get(&r.reveal.request_id) {
                    r.reveal.salt = *salt;
                }
                let r = self.resign_reveal(i, r);
                self.broadcast(i, Message::Reveal(r));
            }
            (Behaviour::SteerSelection { group }, Message::Reveal(r)) => {
                let (group, id) = (*group, r.reveal.request_id);
                self.nodes[i].steer_held.insert(id, r);
                if self.steer_scheduled.insert((id, group)) {
                    let deadline = self
                        .by_id
                        .get(&id)
                        .map(|&k| self.reqs[k].deadline)
                        .unwrap_or(self.now);
                    let at = (deadline + self.sc.reveal_window_ms / 2).max(self.now);
                    self.push(
                        at,
                        Ev::Steer {
                            group,
                            request_id: id,
                        },
                    );
                }
            }
            (_, m) => self.broadcast(i, m),
        }
    }

    /// A grinder's commit: among `tries` salts, the one under which the selection over the
    /// commitments seen so far (other salts guessed as zeros) picks the grinder.
    pub(super) fn grind(&mut self, i: usize, c: CommitMsg, tries: u32) -> CommitMsg {
        let id = c.commit.request_id;
        let Some(own) = self.nodes[i].own_outputs.get(&id).cloned() else {
            return c;
        };
        let others: BTreeSet<Commitment> = self.nodes[i]
            .log
            .get(&id)
            .into_iter()
            .flatten()
            .filter_map(|m| match m.message() {
                Message::Commit(o) if o.commit.node != c.commit.node => Some(o.commit.commitment),
                _ => None,
            })
            .collect();
        let node = self.nodes[i].id;
        let mut best = (own.salt, own.commitment);
        for t in 0..tries {
            let mut pre = own.salt.0.to_vec();
            pre.extend_from_slice(&t.to_be_bytes());
            let salt = Salt(rakis_core::consensus::sha256(&pre).0);
            let commitment = rakis_core::consensus::commitment(
                &id,
                &node,
                &own.inference_id,
                &own.output,
                &own.embedding,
                &salt,
            );
            let mut set: Vec<(Commitment, Salt)> =
                others.iter().map(|&o| (o, Salt([0; 32]))).collect();
            set.push((commitment, salt));
            set.sort_by_key(|(c, _)| *c);
            let (_, index) = rakis_core::consensus::selection_index(&id, &set);
            if set[index as usize].0 == commitment {
                best = (salt, commitment);
                break;
            }
        }
        self.nodes[i].ground.insert(id, best.0);
        let mut c = c;
        c.commit.commitment = best.1;
        c
    }

    /// A commit the adversary changed, its statement signed again by its key (as a real
    /// adversary would: a statement that does not hold only gets the commit dropped).
    fn resign_commit(&self, i: usize, c: CommitMsg) -> CommitMsg {
        CommitMsg::signed(
            &self.nodes[i].key,
            &rakis_core::consensus::network_digest(NETWORK),
            c.commit,
            c.model,
        )
    }

    /// A reveal the adversary changed, its statement signed again by its key.
    fn resign_reveal(&self, i: usize, r: RevealMsg) -> RevealMsg {
        RevealMsg::signed(
            &self.nodes[i].key,
            &rakis_core::consensus::network_digest(NETWORK),
            r.reveal,
            r.model,
            r.evidence,
        )
    }
}

/// The first 8 bytes of a sampling seed, for the simulator's generators.
fn seed_u64(seed: &rakis_core::Hash32) -> u64 {
    u64::from_le_bytes(seed.0[..8].try_into().expect("8 bytes"))
}
