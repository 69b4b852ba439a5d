//! Exact search over quantised embeddings, kept in one block per category.
//!
//! Every item embedding (a unit vector) is stored as `i16` codes at the fixed
//! scale [`SCALE`], grouped by category. A query is quantised the same way
//! and scored against a block with integer dot products: integer sums do not
//! depend on the order they are added in, so every process and every CPU
//! gets exactly the same scores, and the loops below compile to packed
//! multiply-adds (`pmaddwd`) on any x86-64. The ranking is by those integer
//! scores (ties by item id), and the similarity callers see is the integer
//! score scaled back ([`similarity`]). Each code is within `2^-15` of its
//! coordinate, so for unit vectors that is at most `sqrt(dims) * 2^-14`
//! from the exact dot product (under `5e-4` at 64 dims): only near-ties at
//! the cut may fall the other way than an `f32` search would put them
//! (`cargo bench -p recall` prints the recall@500 against exact `f32`
//! search).
//!
//! Blocks by category make the tenant's category filter free (a disallowed
//! category is never read) and make a per-category floor exact: every
//! allowed category contributes its nearest few, which keeps the candidate
//! pool able to satisfy rerank's per-page caps.
//!
//! At the default 50,000 items x 64 dims a full scan is 3.2 M multiply-adds
//! over 6.6 MB. It is one pass: rows are scored a chunk at a time into a
//! small buffer on the stack, and a chunk only costs more than the scoring
//! when one of its scores can still enter the overall best `k` or its
//! category's best `floor` ([`TopK`]); the item id is stored at the end of
//! its row, so a score that enters finds its id in the cache line just read.
//! No f32 embedding is read per request: each would be a cache miss.
//! `cargo bench -p recall` compares it with HNSW on the same data.

use world::World;

/// Codes are `round(x * SCALE)`. For unit vectors `|a.b| <= 1`, so a score
/// is at most `SCALE^2 = 2^28` in magnitude and no partial sum can overflow
/// `i32`; the rounding error of a code is below `2^-15`.
pub const SCALE: f32 = 16_384.0;

/// Codes after a row's embedding: its item id, low half then high half.
const ID_CODES: usize = 2;

/// Rows scored at a time into the stack buffer before selecting from them.
const CHUNK: usize = 64;

/// Scores checked at once against the entry bar (one vector compare).
const GROUP: usize = 16;

/// Items of one category.
struct Block {
    /// One row per item, ids ascending: the item's `dims` codes, then its id
    /// in [`ID_CODES`] codes.
    rows: Vec<i16>,
    /// Number of items (rows).
    len: usize,
    /// The mean of the rows' codes: blocks nearest the query are scanned
    /// first, so the entry bar rises early and fewer scores pass it.
    centre: Vec<i16>,
}

/// A category set, as a mask over category indices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Categories(Option<Vec<bool>>);

impl Categories {
    /// Every category.
    pub fn all() -> Self {
        Self(None)
    }

    /// Only the categories in `allowed` (indices of `0..count`).
    pub fn only(count: usize, allowed: impl IntoIterator<Item = u32>) -> Self {
        let mut mask = vec![false; count];
        for c in allowed {
            if let Some(m) = mask.get_mut(c as usize) {
                *m = true;
            }
        }
        Self(Some(mask))
    }

    /// Whether `category` is in the set.
    pub fn contains(&self, category: u32) -> bool {
        match &self.0 {
            None => true,
            Some(mask) => mask.get(category as usize).copied().unwrap_or(false),
        }
    }
}

/// The quantised, category-blocked copy of a world's item embeddings.
pub struct FlatIndex {
    dims: usize,
    /// Codes per row: `dims + ID_CODES`.
    stride: usize,
    blocks: Vec<Block>,
}

/// `a.b` over codes, for any length. Sixteen independent lanes so the
/// compiler vectorises it; integer addition makes the result independent of
/// that order.
pub fn dot_codes(a: &[i16], b: &[i16]) -> i32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0i32; 16];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..16 {
            lanes[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    let tail: i32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum();
    lanes.iter().sum::<i32>() + tail
}

/// [`dot_codes`] for a length known when compiling (a multiple of 16): the
/// loop unrolls and the query stays in registers, about half the
/// instructions per row of the general loop. Same integer result.
#[inline(always)]
fn dot_fixed<const D: usize>(a: &[i16; D], b: &[i16; D]) -> i32 {
    let mut lanes = [0i32; 16];
    for c in 0..D / 16 {
        for i in 0..16 {
            lanes[i] += i32::from(a[c * 16 + i]) * i32::from(b[c * 16 + i]);
        }
    }
    lanes.iter().sum::<i32>()
}

fn score_fixed<const D: usize>(rows: &[i16], stride: usize, query: &[i16], out: &mut [i32]) {
    let (Some(q), true) = (query.first_chunk::<D>(), stride >= D) else {
        return score_any(rows, stride, query, out);
    };
    for (slot, row) in out.iter_mut().zip(rows.chunks_exact(stride)) {
        if let Some(r) = row.first_chunk::<D>() {
            *slot = dot_fixed(r, q);
        }
    }
}

fn score_any(rows: &[i16], stride: usize, query: &[i16], out: &mut [i32]) {
    let dims = query.len().min(stride);
    for (slot, row) in out.iter_mut().zip(rows.chunks_exact(stride.max(1))) {
        *slot = dot_codes(&row[..dims], query);
    }
}

/// Writes the score against `query` of each `stride`-long row of `rows`
/// (codes first) into `out`, one per row (as many as both hold). Common
/// dimensions take the unrolled loop; the choice depends on the data's shape
/// only, never on the CPU, and every loop gives the same integers.
pub(crate) fn score_rows(rows: &[i16], stride: usize, query: &[i16], out: &mut [i32]) {
    match query.len() {
        16 => score_fixed::<16>(rows, stride, query, out),
        32 => score_fixed::<32>(rows, stride, query, out),
        48 => score_fixed::<48>(rows, stride, query, out),
        64 => score_fixed::<64>(rows, stride, query, out),
        96 => score_fixed::<96>(rows, stride, query, out),
        128 => score_fixed::<128>(rows, stride, query, out),
        _ => score_any(rows, stride, query, out),
    }
}

/// The codes of a vector (unit length, or less).
pub fn quantise(v: &[f32]) -> Vec<i16> {
    v.iter()
        .map(|x| (x.clamp(-1.0, 1.0) * SCALE).round() as i16)
        .collect()
}

/// The similarity an integer score stands for: `score / SCALE^2`.
pub fn similarity(score: i32) -> f32 {
    score as f32 * (1.0 / (SCALE * SCALE))
}

/// Sort key of a score and a tie-breaker (an item id or a position): higher
/// score first, then lower tie-breaker. Larger key is better; keys of
/// distinct tie-breakers are distinct.
fn key(score: i32, tie: u32) -> i64 {
    (i64::from(score) << 32) | i64::from(u32::MAX - tie)
}

fn score_of(key: i64) -> i32 {
    (key >> 32) as i32
}

fn tie_of(key: i64) -> u32 {
    u32::MAX - (key & 0xffff_ffff) as u32
}

/// The `want` largest keys pushed into it. Keeps a buffer of the best seen
/// so far and prunes it to `want` whenever it doubles, so once the buffer
/// has filled, only keys above the running bar cost anything; callers test
/// [`TopK::bar`] first to skip whole runs of scores.
pub(crate) struct TopK {
    want: usize,
    buf: Vec<i64>,
    /// A key at or below this cannot be among the best `want`.
    floor: i64,
}

impl TopK {
    pub(crate) fn new(want: usize) -> Self {
        Self {
            want,
            buf: Vec::with_capacity(if want == 0 { 0 } else { want * 2 }),
            floor: i64::MIN,
        }
    }

    /// The lowest score that may still enter (a score equal to the floor's
    /// can, with a lower tie-breaker).
    pub(crate) fn bar(&self) -> i32 {
        if self.want == 0 {
            i32::MAX
        } else if self.floor == i64::MIN {
            i32::MIN
        } else {
            score_of(self.floor)
        }
    }

    /// Whether `key` would enter.
    pub(crate) fn admits(&self, key: i64) -> bool {
        self.want > 0 && key > self.floor
    }

    /// Offers `key` (distinct from every key offered before).
    pub(crate) fn push(&mut self, key: i64) {
        if !self.admits(key) {
            return;
        }
        self.buf.push(key);
        if self.buf.len() >= self.want * 2 {
            self.buf
                .select_nth_unstable_by(self.want - 1, |a, b| b.cmp(a));
            self.buf.truncate(self.want);
            // After the partition the last kept key is the smallest.
            self.floor = self.buf[self.want - 1];
        }
    }

    /// The best `want` keys, best first.
    pub(crate) fn into_sorted(mut self) -> Vec<i64> {
        self.buf.sort_unstable_by(|a, b| b.cmp(a));
        self.buf.truncate(self.want);
        self.buf
    }
}

/// The positions of the `want` best of `scores`, best first (ties by
/// position).
pub(crate) fn best_positions(scores: &[i32], want: usize) -> Vec<usize> {
    let mut top = TopK::new(want);
    for (group, chunk) in scores.chunks(GROUP).enumerate() {
        let bar = top.bar();
        if !chunk.iter().fold(false, |any, s| any | (*s >= bar)) {
            continue;
        }
        for (i, s) in chunk.iter().enumerate() {
            top.push(key(*s, (group * GROUP + i) as u32));
        }
    }
    top.into_sorted()
        .into_iter()
        .map(|k| tie_of(k) as usize)
        .collect()
}

/// An item id as the codes at the end of its row.
fn id_codes(id: u32) -> [i16; ID_CODES] {
    [id as u16 as i16, (id >> 16) as u16 as i16]
}

/// The item id stored at the end of a row (after `dims` codes).
fn row_id(row: &[i16], dims: usize) -> u32 {
    let half = |i: usize| u32::from(row.get(dims + i).map_or(0, |c| *c as u16));
    half(0) | (half(1) << 16)
}

impl FlatIndex {
    /// Quantises every item embedding of `world` into its category's block.
    pub fn build(world: &World) -> Self {
        let dims = world.dims();
        let stride = dims + ID_CODES;
        let categories = world.config().categories as usize;
        let mut blocks: Vec<Block> = (0..categories)
            .map(|_| Block {
                rows: Vec::new(),
                len: 0,
                centre: Vec::new(),
            })
            .collect();
        for item in world.items() {
            if let (Some(block), Some(e)) = (
                blocks.get_mut(item.category as usize),
                world.item_embedding(item.id),
            ) {
                block.rows.extend(quantise(e));
                block.rows.resize(block.len * stride + dims, 0);
                block.rows.extend(id_codes(item.id as u32));
                block.len += 1;
            }
        }
        for block in &mut blocks {
            let mut sum = vec![0i64; dims];
            for row in block.rows.chunks_exact(stride) {
                sum.iter_mut()
                    .zip(row)
                    .for_each(|(s, c)| *s += i64::from(*c));
            }
            let n = block.len.max(1) as i64;
            block.centre = sum.iter().map(|s| (s / n) as i16).collect();
        }
        Self {
            dims,
            stride,
            blocks,
        }
    }

    /// Embedding dimensions.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Number of category blocks.
    pub fn categories(&self) -> usize {
        self.blocks.len()
    }

    /// Number of items in one category's block.
    pub(crate) fn block_len(&self, category: usize) -> usize {
        self.blocks.get(category).map_or(0, |b| b.len)
    }

    /// The codes of the item at `pos` in a category's block.
    pub(crate) fn codes_at(&self, category: usize, pos: usize) -> &[i16] {
        self.blocks
            .get(category)
            .and_then(|b| b.rows.get(pos * self.stride..pos * self.stride + self.dims))
            .unwrap_or_default()
    }

    /// The id of the item at `pos` in a category's block.
    pub(crate) fn id_at(&self, category: usize, pos: usize) -> Option<u32> {
        let block = self.blocks.get(category)?;
        let row = block.rows.get(pos * self.stride..(pos + 1) * self.stride)?;
        Some(row_id(row, self.dims))
    }

    /// Writes the score of every item of a category's block against the
    /// codes `query` into `out` (resized to the block's length).
    pub(crate) fn score_block(&self, category: usize, query: &[i16], out: &mut Vec<i32>) {
        let Some(block) = self.blocks.get(category) else {
            out.clear();
            return;
        };
        out.clear();
        out.resize(block.len, 0);
        score_rows(&block.rows, self.stride, query, out);
    }

    /// Up to `k` items nearest `query` (a unit vector) with their
    /// similarity (the integer score of the codes scaled by `2^-28`), best
    /// first by that score (ties by id), from the categories in
    /// `allowed`, skipping items for which `skip` is true. Every allowed
    /// category contributes at least its `floor` nearest items (when it has
    /// them and `k` leaves room), so the result spans the allowed
    /// catalogue; the rest are the nearest overall.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        floor: usize,
        allowed: &Categories,
        skip: impl Fn(u64) -> bool,
    ) -> Vec<(u64, f32)> {
        if k == 0 {
            return Vec::new();
        }
        let mut codes = quantise(query);
        codes.resize(self.dims, 0);
        // The nearest `k` overall: whatever the floors take, the rest of the
        // answer is among them.
        let mut overall = TopK::new(k);
        let mut reserved: Vec<i64> = Vec::new();
        let mut scores = [0i32; CHUNK];
        let mut order: Vec<(i32, usize)> = self
            .blocks
            .iter()
            .enumerate()
            .filter(|(c, b)| allowed.contains(*c as u32) && b.len > 0)
            .map(|(c, b)| (dot_codes(&b.centre, &codes), c))
            .collect();
        order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for block in order.iter().filter_map(|(_, c)| self.blocks.get(*c)) {
            let mut own = TopK::new(floor);
            for rows in block.rows.chunks(CHUNK * self.stride) {
                let scores = &mut scores[..rows.len() / self.stride];
                score_rows(rows, self.stride, &codes, scores);
                for (g, group) in scores.chunks(GROUP).enumerate() {
                    let bar = overall.bar().min(own.bar());
                    if !group.iter().fold(false, |any, s| any | (*s >= bar)) {
                        continue;
                    }
                    for (i, s) in group.iter().enumerate() {
                        if *s < bar {
                            continue;
                        }
                        let at = (g * GROUP + i) * self.stride;
                        let id = row_id(&rows[at..at + self.stride], self.dims);
                        let key = key(*s, id);
                        let (to_overall, to_own) = (overall.admits(key), own.admits(key));
                        if !(to_overall || to_own) || skip(u64::from(id)) {
                            continue;
                        }
                        overall.push(key);
                        own.push(key);
                    }
                }
            }
            reserved.extend(own.into_sorted());
        }
        reserved.sort_unstable_by(|a, b| b.cmp(a));
        reserved.truncate(k);
        let room = k - reserved.len();
        let rest: Vec<i64> = overall
            .into_sorted()
            .into_iter()
            .filter(|key| reserved.binary_search_by(|r| key.cmp(r)).is_err())
            .take(room)
            .collect();
        reserved.extend(rest);
        reserved.sort_unstable_by(|a, b| b.cmp(a));
        reserved
            .into_iter()
            .map(|key| (u64::from(tie_of(key)), similarity(score_of(key))))
            .collect()
    }
}

/// Best first, ties by id: the one order every process agrees on.
pub(crate) fn sort_scored(v: &mut [(u64, f32)]) {
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(dims: u32) -> World {
        World::generate(&world::WorldConfig {
            items: 3_000,
            users: 20,
            dims,
            categories: 6,
            ..world::WorldConfig::default()
        })
    }

    /// A deterministic stream of pseudo-random numbers.
    fn numbers(seed: u64) -> impl Iterator<Item = u64> {
        let mut x = seed;
        std::iter::repeat_with(move || {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            x >> 33
        })
    }

    fn exact_f32(world: &World, q: &[f32], k: usize) -> Vec<(u64, f32)> {
        let mut all: Vec<(u64, f32)> = (0..world.len() as u64)
            .filter_map(|i| world.item_embedding(i).map(|e| (i, world::dot(q, e))))
            .collect();
        sort_scored(&mut all);
        all.truncate(k);
        all
    }

    /// Every item's integer score against `q`, by brute force, best first
    /// (ties by id), with its category.
    fn ranked_codes(world: &World, q: &[f32]) -> Vec<(i32, u64, u32)> {
        let codes = quantise(q);
        let mut all: Vec<(i32, u64, u32)> = world
            .items()
            .iter()
            .filter_map(|item| {
                let e = world.item_embedding(item.id)?;
                Some((dot_codes(&quantise(e), &codes), item.id, item.category))
            })
            .collect();
        all.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        all
    }

    /// What `search` promises, written the slow way: each allowed
    /// category's best `floor` admitted items (at most `k` of them, best
    /// first), then the best of the rest up to `k`, all best first.
    fn reference(
        world: &World,
        q: &[f32],
        k: usize,
        floor: usize,
        allowed: &Categories,
        skip: impl Fn(u64) -> bool,
    ) -> Vec<(u64, f32)> {
        let ranked: Vec<(i32, u64, u32)> = ranked_codes(world, q)
            .into_iter()
            .filter(|(_, id, c)| allowed.contains(*c) && !skip(*id))
            .collect();
        let mut per = vec![0; world.config().categories as usize];
        let mut reserved: Vec<(i32, u64, u32)> = Vec::new();
        for x in &ranked {
            if per[x.2 as usize] < floor {
                per[x.2 as usize] += 1;
                reserved.push(*x);
            }
        }
        reserved.truncate(k);
        let room = k - reserved.len();
        let rest: Vec<(i32, u64, u32)> = ranked
            .iter()
            .filter(|x| !reserved.contains(x))
            .take(room)
            .copied()
            .collect();
        reserved.extend(rest);
        reserved.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        reserved
            .into_iter()
            .map(|(s, id, _)| (id, similarity(s)))
            .collect()
    }

    #[test]
    fn unrolled_and_general_dot_products_agree() {
        for dims in [8, 16, 24, 32, 48, 64, 96, 128, 130] {
            let stride = dims + ID_CODES;
            let mut r = numbers(dims as u64);
            // Codes of unit vectors, as the index holds: random directions,
            // an axis (a full-scale code) and an all-equal vector (the
            // largest sums the lanes see).
            let mut unit = |n: u64| -> Vec<i16> {
                let v: Vec<f32> = match n % 4 {
                    0 => (0..dims)
                        .map(|d| if d == n as usize % dims { -1.0 } else { 0.0 })
                        .collect(),
                    1 => vec![1.0 / (dims as f32).sqrt(); dims],
                    _ => {
                        let mut v: Vec<f32> = (0..dims)
                            .map(|_| (r.next().unwrap_or(0) % 2_001) as f32 - 1_000.0)
                            .collect();
                        world::normalize(&mut v);
                        v
                    }
                };
                quantise(&v)
            };
            let mut rows: Vec<i16> = Vec::new();
            for n in 0..37 {
                rows.extend(unit(n));
                rows.extend(id_codes(n as u32));
            }
            for query in [unit(1), unit(2), unit(4)] {
                let mut got = vec![0; 37];
                score_rows(&rows, stride, &query, &mut got);
                let want: Vec<i32> = rows
                    .chunks_exact(stride)
                    .map(|row| {
                        row[..dims]
                            .iter()
                            .zip(&query)
                            .map(|(a, b)| i64::from(*a) * i64::from(*b))
                            .sum::<i64>() as i32
                    })
                    .collect();
                assert_eq!(got, want, "dims {dims}");
            }
        }
    }

    #[test]
    fn ids_round_trip_through_a_row() {
        for id in [
            0,
            1,
            0x7fff,
            0x8000,
            0xffff,
            0x1_0000,
            0xdead_beef,
            u32::MAX,
        ] {
            let mut row = vec![3i16; 4];
            row.extend(id_codes(id));
            assert_eq!(row_id(&row, 4), id);
        }
    }

    #[test]
    fn top_k_keeps_the_largest_keys_best_first() {
        // Few distinct scores, so ties are decided by the tie-breaker.
        let scores: Vec<i32> = numbers(7)
            .take(5_000)
            .map(|x| (x % 97) as i32 - 40)
            .collect();
        let mut all: Vec<i64> = scores
            .iter()
            .enumerate()
            .map(|(i, s)| key(*s, i as u32))
            .collect();
        all.sort_by(|a, b| b.cmp(a));
        for want in [0, 1, 2, 7, 500, 4_999, 5_000, 6_000] {
            let mut top = TopK::new(want);
            for k in scores.iter().enumerate().map(|(i, s)| key(*s, i as u32)) {
                top.push(k);
                // Nothing below the bar would enter.
                if top.bar() > i32::MIN {
                    assert!(!top.admits(key(top.bar() - 1, 0)));
                }
            }
            let want_keys: Vec<i64> = all.iter().copied().take(want).collect();
            assert_eq!(top.into_sorted(), want_keys, "want {want}");
        }
        assert_eq!(TopK::new(0).bar(), i32::MAX);
        assert_eq!(TopK::new(3).bar(), i32::MIN);
    }

    #[test]
    fn best_positions_orders_by_score_then_position() {
        let scores = [5, 9, 9, -3, 7, 9, 0, 7];
        assert_eq!(best_positions(&scores, 4), vec![1, 2, 5, 4]);
        let many: Vec<i32> = (0..10_000).map(|i| (i * 7919) % 10_007).collect();
        let got = best_positions(&many, 10);
        let mut sorted: Vec<(i32, usize)> = many.iter().copied().zip(0..).collect();
        sorted.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        assert_eq!(got, sorted.iter().take(10).map(|x| x.1).collect::<Vec<_>>());
        assert!(best_positions(&many, 0).is_empty());
    }

    #[test]
    fn uncapped_search_is_exact_over_the_codes() {
        // 24 dims take the general loop, 64 the unrolled one.
        for dims in [24, 64] {
            let w = world(dims);
            let flat = FlatIndex::build(&w);
            for user in 0..10 {
                let q = w.user_embedding(user).expect("user");
                assert_eq!(
                    flat.search(q, 100, 0, &Categories::all(), |_| false),
                    reference(&w, q, 100, 0, &Categories::all(), |_| false),
                    "dims {dims}, user {user}"
                );
            }
        }
    }

    #[test]
    fn search_agrees_with_f32_search_but_for_near_ties() {
        let w = world(64);
        let flat = FlatIndex::build(&w);
        let (mut hits, k, users) = (0, 200, 20);
        for user in 0..users {
            let q = w.user_embedding(user).expect("user");
            let exact = exact_f32(&w, q, k);
            let got = flat.search(q, k, 0, &Categories::all(), |_| false);
            for (id, s) in &got {
                let e = w.item_embedding(*id).expect("item");
                let err = (s - world::dot(q, e)).abs();
                assert!(err < 5e-4, "item {id}: {s} is {err} from the f32 dot");
            }
            let truth: std::collections::HashSet<u64> = exact.iter().map(|x| x.0).collect();
            hits += got.iter().filter(|x| truth.contains(&x.0)).count();
        }
        let recall = hits as f64 / (k * users as usize) as f64;
        assert!(recall > 0.995, "recall@{k} against f32 search {recall}");
    }

    #[test]
    fn floors_filters_and_skips_hold() {
        for dims in [24, 64] {
            let w = world(dims);
            let flat = FlatIndex::build(&w);
            let q = w.user_embedding(3).expect("user");
            let allowed = Categories::only(6, [1, 4, 5]);
            let skip = |id: u64| id.is_multiple_of(2);
            let got = flat.search(q, 50, 10, &allowed, skip);
            assert_eq!(got, reference(&w, q, 50, 10, &allowed, skip));
            assert_eq!(got.len(), 50);
            let mut per = [0; 6];
            for (id, _) in &got {
                assert_eq!(id % 2, 1);
                let c = w.item(*id).expect("item").category;
                assert!([1, 4, 5].contains(&c));
                per[c as usize] += 1;
            }
            assert!(per[1] >= 10 && per[4] >= 10 && per[5] >= 10, "{per:?}");
        }
    }

    #[test]
    fn floors_beyond_k_keep_the_best_reserved_and_small_asks_are_exact() {
        let w = world(64);
        let flat = FlatIndex::build(&w);
        let q = w.user_embedding(5).expect("user");
        let all = Categories::all();
        // Six categories of three reserved is more than k: the best five.
        let got = flat.search(q, 5, 3, &all, |_| false);
        assert_eq!(got.len(), 5);
        assert_eq!(got, reference(&w, q, 5, 3, &all, |_| false));
        for (k, floor) in [(1, 0), (1, 1), (7, 1), (3_000, 2), (4_000, 0)] {
            assert_eq!(
                flat.search(q, k, floor, &all, |id| id.is_multiple_of(3)),
                reference(&w, q, k, floor, &all, |id| id.is_multiple_of(3)),
                "k {k}, floor {floor}"
            );
        }
        assert!(flat.search(q, 0, 2, &all, |_| false).is_empty());
        assert!(
            flat.search(q, 10, 2, &Categories::only(6, []), |_| false)
                .is_empty()
        );
    }
}
