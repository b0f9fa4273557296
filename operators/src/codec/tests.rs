//! Tests of the state codec: round trips, truncation, views that changed, and
//! split then merge.

use super::*;
use crate::aggregate::{AggColumn, AggregateSpec, GroupColumn};
use crate::envelope::Envelope;
use crate::expr::{AggFn, Expr};
use crate::fields::FieldRegistry;
use crate::fold::{ColumnSpec, FoldSpec, Handler};
use crate::projection::{AggState, FastMap};
use crate::table::{Retain, TableColumn, TableSpec};
use crate::value::ColumnType;
use crate::view::ViewSpec;
use proptest::prelude::*;

/// The maps of a state, sorted, for comparing states in tests.
fn canonical(state: &PartitionState) -> String {
    let mut versions: Vec<_> = state.versions.iter().collect();
    versions.sort();
    let streams: Vec<Vec<_>> = state
        .stream_versions
        .iter()
        .map(|v| {
            let mut v: Vec<_> = v.iter().collect();
            v.sort();
            v
        })
        .collect();
    let views: Vec<String> = state
        .views
        .iter()
        .map(|v| match v {
            ViewState::Fold(f) => {
                let mut rows: Vec<_> = f
                    .iter()
                    .map(|r| format!("{}={:?}", r.key, r.values))
                    .collect();
                rows.sort();
                rows.join(";")
            }
            ViewState::Aggregate(a) => {
                let mut groups: Vec<_> = a
                    .groups
                    .iter()
                    .map(|(g, x)| format!("{g:?}={x:?}"))
                    .collect();
                groups.sort();
                groups.join(";")
            }
            // In order: a table's rows are a sequence.
            ViewState::Table(t) => format!("{:?}|{:?}", t.max_time, t.rows),
        })
        .collect();
    let mut dedup: Vec<_> = state.dedup.iter().collect();
    dedup.sort_by(|a, b| a.0.cmp(b.0));
    let mut parked: Vec<_> = state.parked.iter().collect();
    parked.sort_by(|a, b| a.0.cmp(b.0));
    let mut redriven: Vec<_> = state.redriven.iter().collect();
    redriven.sort_by(|a, b| a.0.cmp(b.0));
    format!("{versions:?}|{streams:?}|{dedup:?}|{parked:?}|{redriven:?}|{views:?}")
}

/// A projection with a fold view (every column type), an aggregate view (every
/// accumulator) and a table view (every column type), over fields `k` (key), `t`
/// (type), `v` (version) and `x`.
fn projection() -> Projection {
    let mut fields = FieldRegistry::new();
    let (k, t, v, x) = (
        fields.intern("k"),
        fields.intern("t"),
        fields.intern("v"),
        fields.intern("x"),
    );
    let envelope = Envelope {
        id: None,
        event_type: t,
        key: k,
        version: Some(v),
        timestamp: None,
        correlation_id: None,
        causation_id: None,
    };
    let columns = ColumnType::ALL
        .iter()
        .map(|(name, ty)| ColumnSpec {
            name: (*name).into(),
            ty: *ty,
            default: None,
        })
        .collect();
    let fold = FoldSpec {
        key_column: "key".into(),
        columns,
        handlers: [("T".to_string(), Handler::default())]
            .into_iter()
            .collect(),
        star: None,
        parked_column: false,
    };
    let agg = |name: &str, func, ty| AggColumn {
        name: name.into(),
        func,
        arg: Some(Expr::field(x)),
        ty,
    };
    let aggregate = AggregateSpec {
        filter: None,
        group_by: vec![GroupColumn {
            name: "g".into(),
            expr: Expr::field(t),
            ty: ColumnType::String,
        }],
        columns: vec![
            agg("n", AggFn::CountStar, ColumnType::Int64),
            agg("si", AggFn::Sum, ColumnType::Int64),
            agg("sf", AggFn::Sum, ColumnType::Float64),
            agg("lo", AggFn::Min, ColumnType::String),
            agg("hi", AggFn::Max, ColumnType::Float64),
            agg("mean", AggFn::Avg, ColumnType::Float64),
        ],
    };
    let table = TableSpec {
        filter: None,
        columns: ColumnType::ALL
            .iter()
            .map(|(name, ty)| TableColumn {
                name: (*name).into(),
                expr: Expr::field(x),
                ty: *ty,
            })
            .collect(),
        retain: Retain::default(),
    };
    let views = vec![
        ViewSpec {
            name: "f".into(),
            kind: ViewKind::Fold(fold),
        },
        ViewSpec {
            name: "tb".into(),
            kind: ViewKind::Table(table),
        },
        ViewSpec {
            name: "a".into(),
            kind: ViewKind::Aggregate(aggregate),
        },
    ];
    Projection::new(envelope, views, &fields)
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>().prop_map(Value::Float),
        ".{0,12}".prop_map(|s| Value::Str(s.into())),
        any::<bool>().prop_map(|array| Value::Nested { array }),
    ]
}

/// A held record: every field, with and without its optional parts.
fn held() -> impl Strategy<Value = HeldRecord> {
    let bytes = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8));
    (
        "[a-z]{1,4}/[0-9]",
        any::<u64>(),
        bytes(),
        bytes(),
        proptest::option::of(any::<i64>()),
        proptest::collection::vec(("[a-z]{1,4}", bytes()), 0..3),
    )
        .prop_map(
            |(partition, offset, value, key, timestamp, headers)| HeldRecord {
                partition: partition.into(),
                offset,
                value: value.map(Into::into),
                key: key.map(Into::into),
                timestamp,
                headers: headers
                    .into_iter()
                    .map(|(n, v)| (n.into(), v.map(Into::into)))
                    .collect(),
            },
        )
}

fn state(p: &Projection) -> impl Strategy<Value = PartitionState> + use<> {
    let empty = p.new_partition_state();
    let key = "[a-z]{1,6}";
    let row = proptest::collection::vec(value(), 5);
    let accs = (
        any::<i64>(),
        proptest::option::of(any::<i64>()),
        proptest::option::of(any::<f64>()),
        value(),
        value(),
        any::<f64>(),
        any::<i64>(),
    );
    let table_row = (
        any::<u64>(),
        proptest::option::of(any::<i64>()),
        proptest::collection::vec(value(), 5),
    );
    (
        proptest::collection::hash_map(key, any::<i64>(), 0..20),
        (
            proptest::collection::vec(
                proptest::collection::hash_map(key, any::<i64>(), 0..5),
                0..3,
            ),
            proptest::collection::hash_map(
                key,
                proptest::collection::vec(
                    ("[a-z0-9]{1,4}", proptest::option::of(any::<i64>())),
                    0..4,
                ),
                0..5,
            ),
            proptest::collection::hash_map(key, proptest::collection::vec(held(), 1..4), 0..4),
            proptest::collection::hash_map(
                key,
                proptest::collection::vec((any::<u16>(), any::<u64>()), 0..4),
                0..4,
            ),
        ),
        proptest::collection::hash_map(key, row, 0..20),
        proptest::collection::vec((value(), accs), 0..6),
        proptest::collection::vec(table_row, 0..20),
        proptest::option::of(any::<i64>()),
    )
        .prop_map(
            move |(
                versions,
                (streams, dedup, parked, redriven),
                rows,
                groups,
                table_rows,
                max_time,
            )| {
                let mut s = empty.clone();
                s.versions = versions
                    .into_iter()
                    .map(|(k, v)| (Arc::from(k), v))
                    .collect();
                s.stream_versions = streams
                    .into_iter()
                    .map(|m| m.into_iter().map(|(k, v)| (Arc::from(k), v)).collect())
                    .collect();
                s.dedup = dedup
                    .into_iter()
                    .map(|(k, ids)| {
                        let recent = crate::dedup::RecentIds::from_ids(
                            ids.into_iter().map(|(i, t)| (Arc::from(i), t)),
                        );
                        (Arc::from(k), recent)
                    })
                    .collect();
                s.parked = parked
                    .into_iter()
                    .map(|(k, records)| {
                        let mut records = records.into_iter();
                        let first = records.next().expect("at least one");
                        let mut p = Parked::new("apply.expression", "it failed", first);
                        p.held.extend(records);
                        (Arc::from(k), p)
                    })
                    .collect();
                s.redriven = redriven
                    .into_iter()
                    .map(|(k, v)| (Arc::from(k), v))
                    .collect();
                s.views[0] = ViewState::Fold(
                    rows.into_iter()
                        .map(|(k, r)| (Arc::from(k), r.into_boxed_slice()))
                        .collect(),
                );
                let mut agg = AggState {
                    groups: FastMap::default(),
                };
                for (g, (n, si, sf, lo, hi, sum, count)) in groups {
                    let accs = vec![
                        Acc::Count(n),
                        Acc::SumInt(si.map(i128::from)),
                        Acc::SumFloat(sf),
                        Acc::Min(lo),
                        Acc::Max(hi),
                        Acc::Avg { sum, count },
                    ];
                    agg.groups
                        .insert(vec![g].into_boxed_slice(), accs.into_boxed_slice());
                }
                s.views[2] = ViewState::Aggregate(agg);
                let mut table_rows: Vec<TableRow> = table_rows
                    .into_iter()
                    .map(|(offset, time, values)| TableRow {
                        offset,
                        time,
                        values: values.into_boxed_slice(),
                    })
                    .collect();
                table_rows.sort_by_key(|r| r.offset);
                s.views[1] = ViewState::Table(TableState::from_rows(table_rows.into(), max_time));
                s
            },
        )
}

proptest! {
    #[test]
    fn encode_decode_round_trips(s in state(&projection())) {
        let p = projection();
        let mut bytes = Vec::new();
        encode(&p, &s, &mut bytes);
        let back = decode(&p, &bytes).unwrap();
        prop_assert_eq!(canonical(&back), canonical(&s));
        // Every truncation is an error, never a panic or a wrong state.
        for cut in 0..bytes.len() {
            prop_assert!(decode(&p, &bytes[..cut]).is_err());
        }
    }

    #[test]
    fn aggregate_partials_round_trip(s in state(&projection())) {
        let p = projection();
        let (ViewKind::Aggregate(spec), ViewState::Aggregate(agg)) = (&p.views()[2].kind, &s.views[2])
        else {
            unreachable!("view 2 is the aggregate")
        };
        let mut bytes = Vec::new();
        encode_partials(spec, agg, &mut bytes);
        let back = decode_partials(spec, &bytes).unwrap();
        let mut again = p.new_partition_state();
        again.views[2] = ViewState::Aggregate(back);
        let mut only = p.new_partition_state();
        only.views[2] = ViewState::Aggregate(agg.clone());
        prop_assert_eq!(canonical(&again), canonical(&only));
        for cut in 0..bytes.len() {
            prop_assert!(decode_partials(spec, &bytes[..cut]).is_err());
        }
    }

    #[test]
    fn split_then_merge_is_identity(s in state(&projection()), n in 1usize..5) {
        let p = projection();
        let route = |k: &str| k.len() % n;
        let pieces = split(&p, s.clone(), n, route);
        for (w, piece) in pieces.iter().enumerate() {
            prop_assert!(piece.versions.keys().all(|k| route(k) == w));
            for versions in &piece.stream_versions {
                prop_assert!(versions.keys().all(|k| route(k) == w));
            }
            prop_assert!(piece.dedup.keys().all(|k| route(k) == w));
            prop_assert!(piece.parked.keys().all(|k| route(k) == w));
            prop_assert!(piece.redriven.keys().all(|k| route(k) == w));
        }
        let mut merged = p.new_partition_state();
        for piece in pieces {
            merge(&mut merged, piece);
        }
        prop_assert_eq!(canonical(&merged), canonical(&s));
    }
}

#[test]
fn a_checkpoint_of_other_views_is_refused() {
    let p = projection();
    let mut bytes = Vec::new();
    encode(&p, &p.new_partition_state(), &mut bytes);
    let mut other = projection();
    let mut views = other.views().to_vec();
    views[0].name = "renamed".into();
    other = Projection::new(other.envelope().clone(), views, &{
        let mut f = FieldRegistry::new();
        for name in ["k", "t", "v", "x"] {
            f.intern(name);
        }
        f
    });
    let e = decode(&other, &bytes).unwrap_err();
    assert!(e.to_string().contains("other views"), "{e}");
    assert!(
        decode(&p, b"nope")
            .unwrap_err()
            .to_string()
            .contains("magic")
    );
}
