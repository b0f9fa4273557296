//! SQL functions whose results can be far larger than their input, bounded.
//!
//! DataFusion's memory pool counts what operators hold (sorts, joins, groups), not
//! what a function returns: `SELECT length(repeat('x', 1000000000))` allocated 4 GB and
//! `array_length(range(200000000))` 1.66 GB before any limit looked. Each function here
//! is replaced by a wrapper that estimates the bytes a call will produce from its
//! arguments and refuses the call (`sql.resources_exhausted`) when they exceed the
//! query's bound, before the inner function allocates anything; and, for whatever an
//! estimate misses (a pattern's replacement, say), checks the size of each result, so
//! nested calls cannot amplify one another.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::kernels::length::length;
use arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{FunctionRegistry, SessionState};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::Expr;
use std::sync::Arc;

/// How a function's result size is estimated from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Estimate {
    /// `repeat(s, n)`: `len(s) * n`.
    Repeat,
    /// `lpad(s, n, ...)`, `rpad(s, n, ...)`: `n` characters.
    Pad,
    /// `replace(s, from, to)`: every `from` becomes `to`.
    Replace,
    /// `array_repeat(e, n)`, `array_resize(a, n, ...)`: `n` elements, each the size
    /// of the argument at this index (at least 8 bytes).
    Elements(Option<usize>),
    /// `range(stop)`, `range(start, stop[, step])` and `generate_series`, of integers
    /// or of dates and times: that many 8-byte elements.
    Series,
    /// `array_concat(a, b, ...)` and the like: the sum of the arguments' sizes (an
    /// argument may be repeated).
    Sum,
    /// Only the result is checked.
    None,
}

/// The functions bounded, and how.
const FUNCTIONS: &[(&str, Estimate)] = &[
    ("repeat", Estimate::Repeat),
    ("lpad", Estimate::Pad),
    ("rpad", Estimate::Pad),
    ("replace", Estimate::Replace),
    ("array_repeat", Estimate::Elements(Some(0))),
    ("array_resize", Estimate::Elements(Some(2))),
    ("range", Estimate::Series),
    ("generate_series", Estimate::Series),
    ("array_concat", Estimate::Sum),
    ("array_append", Estimate::Sum),
    ("array_prepend", Estimate::Sum),
    ("make_array", Estimate::Sum),
    ("concat", Estimate::Sum),
    ("concat_ws", Estimate::Sum),
    ("regexp_replace", Estimate::None),
    ("overlay", Estimate::None),
];

/// Replaces the functions of [`FUNCTIONS`] that `state` has with bounded ones: no call
/// may produce more than `limit` bytes.
pub(crate) fn bound_functions(state: &mut SessionState, limit: usize) -> Result<()> {
    for &(name, estimate) in FUNCTIONS {
        let Some(inner) = state.scalar_functions().get(name).cloned() else {
            continue;
        };
        let bounded = Bounded {
            inner,
            estimate,
            limit,
        };
        state.register_udf(Arc::new(ScalarUDF::new_from_impl(bounded)))?;
    }
    Ok(())
}

/// A function whose calls may produce at most `limit` bytes.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    estimate: Estimate,
    limit: usize,
}

impl Bounded {
    fn refuse(&self, bytes: u64, what: &str) -> DataFusionError {
        DataFusionError::ResourcesExhausted(format!(
            "{}() {what} about {bytes} bytes, more than the {} a function result may have \
             (the smaller of query.memory and query.max_result_bytes)",
            self.inner.name(),
            self.limit
        ))
    }

    /// The bytes a call is estimated to produce, when the arguments allow an estimate.
    fn estimate(&self, args: &ScalarFunctionArgs) -> Option<u64> {
        let rows = args.number_rows;
        let a = &args.args;
        let sum = |v: Vec<u64>| v.into_iter().fold(0u64, u64::saturating_add);
        match self.estimate {
            Estimate::Repeat => {
                let (s, n) = (lengths(a.first()?, rows)?, counts(a.get(1)?, rows)?);
                Some(sum(s
                    .iter()
                    .zip(&n)
                    .map(|(s, n)| s.saturating_mul(*n))
                    .collect()))
            }
            Estimate::Pad => Some(sum(counts(a.get(1)?, rows)?)),
            Estimate::Replace => {
                let s = lengths(a.first()?, rows)?;
                let from = lengths(a.get(1)?, rows)?;
                let to = lengths(a.get(2)?, rows)?;
                let each = s
                    .iter()
                    .zip(from.iter().zip(&to))
                    .map(|(s, (f, t))| (s / (*f).max(1)).saturating_mul(*t).saturating_add(*s));
                Some(sum(each.collect()))
            }
            Estimate::Elements(element) => {
                let n = counts(a.get(1)?, rows)?;
                let each = element
                    .and_then(|i| a.get(i))
                    .map_or(8, |e| (value_bytes(e, rows) / rows.max(1) as u64).max(8));
                Some(sum(n).saturating_mul(each))
            }
            Estimate::Sum => Some(sum(a.iter().map(|v| value_bytes(v, rows)).collect())),
            Estimate::Series => {
                let temporal = a.first()?.data_type().is_temporal();
                let point = |v: &ColumnarValue| match temporal {
                    true => nanos(v, rows),
                    false => signed(v, rows),
                };
                let step = |v: &ColumnarValue| match temporal {
                    true => step_nanos(v, rows),
                    false => signed(v, rows),
                };
                let (start, stop, step) = match a.len() {
                    1 => (None, point(&a[0])?, None),
                    2 => (Some(point(&a[0])?), point(&a[1])?, None),
                    _ => (Some(point(&a[0])?), point(&a[1])?, Some(step(&a[2])?)),
                };
                let each = (0..rows).map(|i| {
                    let from = start.as_ref().map_or(0, |s| s[i]);
                    let by = step.as_ref().map_or(1, |s| s[i]).unsigned_abs().max(1);
                    stop[i].abs_diff(from) / by * 8
                });
                Some(sum(each.collect()))
            }
            Estimate::None => None,
        }
    }
}

/// `f` of each row of an argument: of an array's rows, or of a scalar once (a large
/// literal is not copied once per row to be measured).
fn per_row<T: Clone>(
    value: &ColumnarValue,
    rows: usize,
    f: impl Fn(&ArrayRef) -> Option<Vec<T>>,
) -> Option<Vec<T>> {
    match value {
        ColumnarValue::Array(a) => f(a),
        ColumnarValue::Scalar(s) => {
            let one = f(&s.to_array_of_size(1).ok()?)?.into_iter().next()?;
            Some(vec![one; rows])
        }
    }
}

/// Byte length of each row of a string or binary argument (null: 0).
fn lengths(value: &ColumnarValue, rows: usize) -> Option<Vec<u64>> {
    per_row(value, rows, |array| {
        let lens = length(array).ok()?;
        Some(non_negative(
            &arrow::compute::cast(&lens, &DataType::Int64).ok()?,
        ))
    })
}

/// Each row of an integer argument, negatives as 0 (null: 0).
fn counts(value: &ColumnarValue, rows: usize) -> Option<Vec<u64>> {
    per_row(value, rows, |array| {
        if !array.data_type().is_integer() {
            return None;
        }
        Some(non_negative(
            &arrow::compute::cast(array, &DataType::Int64).ok()?,
        ))
    })
}

/// Each row of an integer argument (null: 0).
fn signed(value: &ColumnarValue, rows: usize) -> Option<Vec<i64>> {
    per_row(value, rows, |array| {
        if !array.data_type().is_integer() {
            return None;
        }
        int64s(&arrow::compute::cast(array, &DataType::Int64).ok()?)
    })
}

/// Each row of a date or time argument, in nanoseconds since the epoch (null: 0).
fn nanos(value: &ColumnarValue, rows: usize) -> Option<Vec<i64>> {
    use arrow::datatypes::TimeUnit;
    per_row(value, rows, |array| {
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let cast = arrow::compute::cast(array, &ts).ok()?;
        int64s(&arrow::compute::cast(&cast, &DataType::Int64).ok()?)
    })
}

/// Each row of an interval argument, in nanoseconds (a month as 30 days; null: 0).
fn step_nanos(value: &ColumnarValue, rows: usize) -> Option<Vec<i64>> {
    use arrow::datatypes::{IntervalMonthDayNanoType, IntervalUnit};
    const DAY: i64 = 86_400_000_000_000;
    per_row(value, rows, |array| {
        let unit = DataType::Interval(IntervalUnit::MonthDayNano);
        let cast = arrow::compute::cast(array, &unit).ok()?;
        let steps = cast.as_primitive::<IntervalMonthDayNanoType>();
        let each = steps.iter().map(|v| {
            v.map_or(0, |v| {
                (i64::from(v.months) * 30 * DAY)
                    .saturating_add(i64::from(v.days) * DAY)
                    .saturating_add(v.nanoseconds)
            })
        });
        Some(each.collect())
    })
}

fn int64s(array: &ArrayRef) -> Option<Vec<i64>> {
    let ints = array.as_primitive_opt::<Int64Type>()?;
    let each = (0..ints.len()).map(|i| if ints.is_null(i) { 0 } else { ints.value(i) });
    Some(each.collect())
}

/// The bytes an argument holds over `rows` rows (a scalar counts once per row).
fn value_bytes(value: &ColumnarValue, rows: usize) -> u64 {
    match value {
        ColumnarValue::Array(_) => result_bytes(value),
        ColumnarValue::Scalar(s) => (s.size() as u64).saturating_mul(rows as u64),
    }
}

fn non_negative(array: &ArrayRef) -> Vec<u64> {
    let ints = array.as_primitive::<Int64Type>();
    (0..ints.len())
        .map(|i| {
            if ints.is_null(i) {
                0
            } else {
                ints.value(i).max(0) as u64
            }
        })
        .collect()
}

/// The bytes a result holds.
fn result_bytes(value: &ColumnarValue) -> u64 {
    match value {
        ColumnarValue::Array(a) => {
            a.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| a.get_array_memory_size()) as u64
        }
        ColumnarValue::Scalar(s) => s.size() as u64,
    }
}

// Every method delegates to the inner function, except that calls are bounded, and
// `simplify`: a simplified call could name the unbounded function again.
impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.inner().name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.inner().aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.inner().signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.inner().return_type(arg_types)
    }

    fn return_field_from_args(
        &self,
        args: datafusion::logical_expr::ReturnFieldArgs<'_>,
    ) -> Result<FieldRef> {
        self.inner.inner().return_field_from_args(args)
    }

    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let Some(bytes) = self.estimate(&args)
            && bytes > self.limit as u64
        {
            return Err(self.refuse(bytes, "would produce"));
        }
        let result = self.inner.inner().invoke_with_args(args)?;
        let bytes = result_bytes(&result);
        if bytes > self.limit as u64 {
            return Err(self.refuse(bytes, "produced"));
        }
        Ok(result)
    }

    fn short_circuits(&self) -> bool {
        self.inner.inner().short_circuits()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.inner().coerce_types(arg_types)
    }

    fn output_ordering(
        &self,
        inputs: &[datafusion::logical_expr::sort_properties::ExprProperties],
    ) -> Result<datafusion::logical_expr::sort_properties::SortProperties> {
        self.inner.inner().output_ordering(inputs)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.inner().documentation()
    }
}
