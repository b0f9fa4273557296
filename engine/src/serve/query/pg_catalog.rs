//! The part of Postgres's `pg_catalog` that clients read to learn what is there: psql's
//! `\d` and `\dt`, drivers and BI tools on connect.
//!
//! Tables hold the views (as tables of schema `public`: `\dt` lists relkind `r`) and
//! their columns, the few types a view or result column can have, and one database,
//! schema set, role and access method; the catalogs of what Projector does not have
//! (defaults, constraints, indexes, inheritance, policies, descriptions) are empty. The
//! functions those queries call answer what a read-only database with no such things
//! would (`pg_table_is_visible` is true, `pg_get_expr` is NULL, ...). Built once per
//! engine from the pipeline's views, which never change while it runs.

use arrow::array::{ArrayRef, BooleanArray, Int64Array, ListArray, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use std::sync::Arc;

/// The schema the catalog tables are in.
pub(crate) const SCHEMA: &str = "pg_catalog";
/// The oid of schema `public`, which holds the views.
const PUBLIC: i64 = 2200;
/// The oid of the first view; the others follow in pipeline order.
const FIRST_VIEW: i64 = 16384;
/// The oid of the only role.
const OWNER: i64 = 10;
/// The name of the only role, which owns everything.
const OWNER_NAME: &str = "projector";

/// The Postgres type of an Arrow type, as results are sent (`serve/pg`): its oid, name
/// and length (-1: variable). Types without a Postgres twin are sent as text.
pub(crate) fn pg_type_of(t: &DataType) -> (u32, &'static str, i64) {
    match t {
        DataType::Boolean => (16, "boolean", 1),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => (21, "smallint", 2),
        DataType::Int32 | DataType::UInt16 => (23, "integer", 4),
        DataType::Int64 | DataType::UInt32 => (20, "bigint", 8),
        DataType::Float16 | DataType::Float32 => (700, "real", 4),
        DataType::Float64 => (701, "double precision", 8),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => (17, "bytea", -1),
        DataType::Date32 | DataType::Date64 => (1082, "date", 4),
        DataType::Timestamp(_, None) => (1114, "timestamp without time zone", 8),
        DataType::Timestamp(_, Some(_)) => (1184, "timestamp with time zone", 8),
        DataType::Time32(_) | DataType::Time64(_) => (1083, "time without time zone", 8),
        DataType::List(f) | DataType::LargeList(f) => match pg_type_of(f.data_type()).0 {
            16 => (1000, "boolean[]", -1),
            21 => (1005, "smallint[]", -1),
            23 => (1007, "integer[]", -1),
            20 => (1016, "bigint[]", -1),
            700 => (1021, "real[]", -1),
            701 => (1022, "double precision[]", -1),
            25 => (1009, "text[]", -1),
            _ => (25, "text", -1),
        },
        _ => (25, "text", -1),
    }
}

/// The types `pg_type` lists: every one [`pg_type_of`] can give, by oid.
const TYPES: &[(i64, &str, i64, &str)] = &[
    // oid, typname, typlen, typcategory
    (16, "bool", 1, "B"),
    (17, "bytea", -1, "U"),
    (20, "int8", 8, "N"),
    (21, "int2", 2, "N"),
    (23, "int4", 4, "N"),
    (25, "text", -1, "S"),
    (26, "oid", 4, "N"),
    (700, "float4", 4, "N"),
    (701, "float8", 8, "N"),
    (1000, "_bool", -1, "A"),
    (1005, "_int2", -1, "A"),
    (1007, "_int4", -1, "A"),
    (1009, "_text", -1, "A"),
    (1016, "_int8", -1, "A"),
    (1021, "_float4", -1, "A"),
    (1022, "_float8", -1, "A"),
    (1043, "varchar", -1, "S"),
    (1082, "date", 4, "D"),
    (1083, "time", 8, "D"),
    (1114, "timestamp", 8, "D"),
    (1184, "timestamptz", 8, "D"),
];

/// Registers schema `pg_catalog` with its tables, and the catalog functions, on `ctx`
/// for `views` (name and schema, in pipeline order) of database `database`.
pub(crate) fn register(
    ctx: &SessionContext,
    views: &[(String, SchemaRef)],
    database: &str,
) -> Result<()> {
    let catalog = ctx
        .catalog("datafusion")
        .expect("the default catalog exists");
    let schema = Arc::new(MemorySchemaProvider::new());
    catalog.register_schema(SCHEMA, schema.clone())?;
    for (name, table) in tables(views, database)? {
        use datafusion::catalog::SchemaProvider;
        schema.register_table(name.to_string(), Arc::new(table))?;
    }
    for f in functions(database) {
        ctx.register_udf(f);
    }
    Ok(())
}

/// A column of a catalog table.
enum Col {
    I(Vec<i64>),
    S(Vec<Option<String>>),
    B(Vec<bool>),
    /// A text array column that is NULL in every row.
    NullList(usize),
}

fn text<I: IntoIterator<Item = S>, S: Into<String>>(v: I) -> Col {
    Col::S(v.into_iter().map(|s| Some(s.into())).collect())
}

fn nulls(n: usize) -> Col {
    Col::S(vec![None; n])
}

fn table(columns: Vec<(&str, Col)>) -> Result<MemTable> {
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (name, col) in columns {
        let (t, a): (DataType, ArrayRef) = match col {
            Col::I(v) => (DataType::Int64, Arc::new(Int64Array::from(v))),
            Col::S(v) => (DataType::Utf8, Arc::new(StringArray::from(v))),
            Col::B(v) => (DataType::Boolean, Arc::new(BooleanArray::from(v))),
            Col::NullList(n) => {
                let item = Arc::new(Field::new_list_field(DataType::Utf8, true));
                (
                    DataType::List(item.clone()),
                    Arc::new(ListArray::new_null(item, n)),
                )
            }
        };
        fields.push(Field::new(name, t, true));
        arrays.push(a);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = arrow::array::RecordBatch::try_new(schema.clone(), arrays)?;
    MemTable::try_new(schema, vec![vec![batch]])
}

fn tables(views: &[(String, SchemaRef)], database: &str) -> Result<Vec<(&'static str, MemTable)>> {
    let n = views.len();
    let oids: Vec<i64> = (0..n as i64).map(|i| FIRST_VIEW + i).collect();
    let class = table(vec![
        ("oid", Col::I(oids.clone())),
        ("relname", text(views.iter().map(|(v, _)| v.clone()))),
        ("relnamespace", Col::I(vec![PUBLIC; n])),
        ("reltype", Col::I(vec![0; n])),
        ("reloftype", Col::I(vec![0; n])),
        ("relowner", Col::I(vec![OWNER; n])),
        ("relam", Col::I(vec![2; n])),
        ("relfilenode", Col::I(vec![0; n])),
        ("reltablespace", Col::I(vec![0; n])),
        ("relpages", Col::I(vec![0; n])),
        ("reltuples", Col::I(vec![-1; n])),
        ("reltoastrelid", Col::I(vec![0; n])),
        ("relhasindex", Col::B(vec![false; n])),
        ("relisshared", Col::B(vec![false; n])),
        ("relpersistence", text(vec!["p"; n])),
        // Views are tables to clients: `\dt` lists relkind r and p only.
        ("relkind", text(vec!["r"; n])),
        (
            "relnatts",
            Col::I(views.iter().map(|(_, s)| s.fields().len() as i64).collect()),
        ),
        ("relchecks", Col::I(vec![0; n])),
        ("relhasrules", Col::B(vec![false; n])),
        ("relhastriggers", Col::B(vec![false; n])),
        ("relhassubclass", Col::B(vec![false; n])),
        ("relrowsecurity", Col::B(vec![false; n])),
        ("relforcerowsecurity", Col::B(vec![false; n])),
        ("relispopulated", Col::B(vec![true; n])),
        ("relreplident", text(vec!["n"; n])),
        ("relispartition", Col::B(vec![false; n])),
        ("relacl", Col::NullList(n)),
        ("reloptions", Col::NullList(n)),
        ("relpartbound", nulls(n)),
    ])?;
    let namespace = table(vec![
        ("oid", Col::I(vec![11, PUBLIC, 13000])),
        (
            "nspname",
            text(["pg_catalog", "public", "information_schema"]),
        ),
        ("nspowner", Col::I(vec![OWNER; 3])),
        ("nspacl", Col::NullList(3)),
    ])?;
    // One row per column of each view: its table, name, type, number, not-null.
    let (mut rel, mut name, mut typ, mut num, mut notnull) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((_, schema), oid) in views.iter().zip(&oids) {
        for (i, f) in schema.fields().iter().enumerate() {
            rel.push(*oid);
            name.push(Some(f.name().clone()));
            typ.push(pg_type_of(f.data_type()).0 as i64);
            num.push(i as i64 + 1);
            notnull.push(!f.is_nullable());
        }
    }
    let a = rel.len();
    let attribute = table(vec![
        ("attrelid", Col::I(rel)),
        ("attname", Col::S(name)),
        ("atttypid", Col::I(typ)),
        ("attlen", Col::I(vec![-1; a])),
        ("attnum", Col::I(num)),
        ("attndims", Col::I(vec![0; a])),
        ("atttypmod", Col::I(vec![-1; a])),
        ("attnotnull", Col::B(notnull)),
        ("atthasdef", Col::B(vec![false; a])),
        ("atthasmissing", Col::B(vec![false; a])),
        ("attidentity", text(vec![""; a])),
        ("attgenerated", text(vec![""; a])),
        ("attisdropped", Col::B(vec![false; a])),
        ("attislocal", Col::B(vec![true; a])),
        ("attinhcount", Col::I(vec![0; a])),
        ("attcollation", Col::I(vec![0; a])),
        ("attacl", Col::NullList(a)),
        ("attoptions", Col::NullList(a)),
    ])?;
    let t = TYPES.len();
    let types = table(vec![
        ("oid", Col::I(TYPES.iter().map(|t| t.0).collect())),
        ("typname", text(TYPES.iter().map(|t| t.1))),
        ("typnamespace", Col::I(vec![11; t])),
        ("typowner", Col::I(vec![OWNER; t])),
        ("typlen", Col::I(TYPES.iter().map(|t| t.2).collect())),
        ("typbyval", Col::B(TYPES.iter().map(|t| t.2 > 0).collect())),
        ("typtype", text(vec!["b"; t])),
        ("typcategory", text(TYPES.iter().map(|t| t.3))),
        ("typisdefined", Col::B(vec![true; t])),
        ("typdelim", text(vec![","; t])),
        ("typrelid", Col::I(vec![0; t])),
        ("typelem", Col::I(vec![0; t])),
        ("typarray", Col::I(vec![0; t])),
        ("typnotnull", Col::B(vec![false; t])),
        ("typbasetype", Col::I(vec![0; t])),
        ("typtypmod", Col::I(vec![-1; t])),
        ("typndims", Col::I(vec![0; t])),
        ("typcollation", Col::I(vec![0; t])),
    ])?;
    let databases = table(vec![
        ("oid", Col::I(vec![16383])),
        ("datname", text([database])),
        ("datdba", Col::I(vec![OWNER])),
        ("encoding", Col::I(vec![6])),
        ("datlocprovider", text(["c"])),
        ("datistemplate", Col::B(vec![false])),
        ("datallowconn", Col::B(vec![true])),
        ("datconnlimit", Col::I(vec![-1])),
        ("datcollate", text(["C.UTF-8"])),
        ("datctype", text(["C.UTF-8"])),
        ("daticulocale", nulls(1)),
        ("datacl", Col::NullList(1)),
    ])?;
    let am = table(vec![
        ("oid", Col::I(vec![2])),
        ("amname", text(["heap"])),
        ("amhandler", text(["heap_tableam_handler"])),
        ("amtype", text(["t"])),
    ])?;
    let roles = table(vec![
        ("oid", Col::I(vec![OWNER])),
        ("rolname", text([OWNER_NAME])),
        ("rolsuper", Col::B(vec![false])),
        ("rolinherit", Col::B(vec![true])),
        ("rolcreaterole", Col::B(vec![false])),
        ("rolcreatedb", Col::B(vec![false])),
        ("rolcanlogin", Col::B(vec![true])),
        ("rolreplication", Col::B(vec![false])),
        ("rolconnlimit", Col::I(vec![-1])),
    ])?;
    let settings = settings_table()?;
    // What Projector has none of: empty, with the columns clients join on.
    let empty = |cols: &[&str]| {
        table(
            cols.iter()
                .map(|c| {
                    let col = if c.ends_with("oid") || c.ends_with("relid") || c.ends_with("num") {
                        Col::I(vec![])
                    } else {
                        Col::S(vec![])
                    };
                    (*c, col)
                })
                .collect(),
        )
    };
    Ok(vec![
        ("pg_class", class),
        ("pg_namespace", namespace),
        ("pg_attribute", attribute),
        ("pg_type", types),
        ("pg_database", databases),
        ("pg_am", am),
        ("pg_roles", roles),
        ("pg_settings", settings),
        (
            "pg_description",
            empty(&["objoid", "classoid", "objsubid", "description"])?,
        ),
        ("pg_attrdef", empty(&["oid", "adrelid", "adnum", "adbin"])?),
        (
            "pg_collation",
            empty(&["oid", "collname", "collnamespace"])?,
        ),
        (
            "pg_constraint",
            empty(&["oid", "conname", "connamespace", "contype", "conrelid"])?,
        ),
        ("pg_index", empty(&["indexrelid", "indrelid"])?),
        (
            "pg_inherits",
            empty(&["inhrelid", "inhparent", "inhseqno"])?,
        ),
        ("pg_trigger", empty(&["oid", "tgrelid", "tgname"])?),
        ("pg_proc", empty(&["oid", "proname", "pronamespace"])?),
    ])
}

/// The settings `SHOW` answers on the Postgres face, and `pg_settings` lists.
pub(crate) const SETTINGS: &[(&str, &str)] = &[
    ("server_version", "15.0"),
    ("server_version_num", "150000"),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("search_path", "public"),
    ("standard_conforming_strings", "on"),
    ("integer_datetimes", "on"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "on"),
    ("default_transaction_read_only", "on"),
    ("max_identifier_length", "63"),
    ("lc_collate", "C.UTF-8"),
    ("is_superuser", "off"),
];

fn settings_table() -> Result<MemTable> {
    table(vec![
        ("name", text(SETTINGS.iter().map(|s| s.0))),
        ("setting", text(SETTINGS.iter().map(|s| s.1))),
    ])
}

/// The value of setting `name` (case-insensitive; `transaction isolation level` as
/// `SHOW` spells it too).
pub(crate) fn setting(name: &str) -> Option<&'static str> {
    let name = name.trim().replace(' ', "_");
    let name = match name.to_ascii_lowercase().as_str() {
        "transaction_isolation_level" => "transaction_isolation".to_string(),
        _ => name,
    };
    SETTINGS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(&name))
        .map(|(_, v)| *v)
}

/// A catalog function: a constant of its result type, or computed from its arguments.
#[derive(Debug)]
struct PgFn {
    name: &'static str,
    signature: Signature,
    returns: DataType,
    answer: fn(&[ScalarValue], &str) -> ScalarValue,
    database: String,
}

impl PartialEq for PgFn {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for PgFn {}
impl std::hash::Hash for PgFn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for PgFn {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(rows.max(1)))
            .collect::<Result<_>>()?;
        let scalar_args = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        if scalar_args {
            let values: Vec<ScalarValue> = args
                .args
                .iter()
                .map(|a| match a {
                    ColumnarValue::Scalar(s) => s.clone(),
                    ColumnarValue::Array(_) => unreachable!("all arguments are scalars"),
                })
                .collect();
            return Ok(ColumnarValue::Scalar(
                (self.answer)(&values, &self.database).cast_to(&self.returns)?,
            ));
        }
        let mut out = Vec::with_capacity(rows);
        for row in 0..rows {
            let values: Vec<ScalarValue> = arrays
                .iter()
                .map(|a| ScalarValue::try_from_array(a, row))
                .collect::<Result<_>>()?;
            out.push((self.answer)(&values, &self.database).cast_to(&self.returns)?);
        }
        Ok(ColumnarValue::Array(ScalarValue::iter_to_array(out)?))
    }
}

fn utf8(s: impl Into<String>) -> ScalarValue {
    ScalarValue::Utf8(Some(s.into()))
}

fn int(v: &ScalarValue) -> Option<i64> {
    v.cast_to(&DataType::Int64).ok().and_then(|s| match s {
        ScalarValue::Int64(i) => i,
        _ => None,
    })
}

fn functions(database: &str) -> Vec<ScalarUDF> {
    let any = || Signature::variadic_any(Volatility::Stable);
    let none = || Signature::nullary(Volatility::Stable);
    let f = |name: &'static str,
             signature: Signature,
             returns: DataType,
             answer: fn(&[ScalarValue], &str) -> ScalarValue| {
        ScalarUDF::new_from_impl(PgFn {
            name,
            signature,
            returns,
            answer,
            database: database.to_string(),
        })
    };
    let null_text: fn(&[ScalarValue], &str) -> ScalarValue = |_, _| ScalarValue::Utf8(None);
    let yes: fn(&[ScalarValue], &str) -> ScalarValue = |_, _| ScalarValue::Boolean(Some(true));
    let schemas = DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));
    vec![
        f("version", none(), DataType::Utf8, |_, _| {
            utf8(format!(
                "PostgreSQL 15.0 (Projector {}, Apache DataFusion {})",
                env!("CARGO_PKG_VERSION"),
                datafusion::DATAFUSION_VERSION
            ))
        }),
        f("pg_get_userbyid", any(), DataType::Utf8, |_, _| {
            utf8(OWNER_NAME)
        }),
        f("pg_table_is_visible", any(), DataType::Boolean, yes),
        f("pg_type_is_visible", any(), DataType::Boolean, yes),
        f("has_table_privilege", any(), DataType::Boolean, yes),
        f("has_schema_privilege", any(), DataType::Boolean, yes),
        f("has_database_privilege", any(), DataType::Boolean, yes),
        f("pg_encoding_to_char", any(), DataType::Utf8, |_, _| {
            utf8("UTF8")
        }),
        f("pg_get_expr", any(), DataType::Utf8, null_text),
        f("obj_description", any(), DataType::Utf8, null_text),
        f("col_description", any(), DataType::Utf8, null_text),
        f("shobj_description", any(), DataType::Utf8, null_text),
        f("pg_get_indexdef", any(), DataType::Utf8, null_text),
        f("pg_get_constraintdef", any(), DataType::Utf8, null_text),
        f("pg_get_viewdef", any(), DataType::Utf8, null_text),
        f("current_schema", none(), DataType::Utf8, |_, _| {
            utf8("public")
        }),
        f("current_database", none(), DataType::Utf8, |_, db| utf8(db)),
        f("current_user", none(), DataType::Utf8, |_, _| {
            utf8(OWNER_NAME)
        }),
        f("session_user", none(), DataType::Utf8, |_, _| {
            utf8(OWNER_NAME)
        }),
        f("pg_backend_pid", none(), DataType::Int32, |_, _| {
            ScalarValue::Int32(Some(std::process::id() as i32))
        }),
        f("current_schemas", any(), schemas, |_, _| {
            ScalarValue::List(ScalarValue::new_list_nullable(
                &[utf8("pg_catalog"), utf8("public")],
                &DataType::Utf8,
            ))
        }),
        f(
            "current_setting",
            any(),
            DataType::Utf8,
            |args, _| match args.first() {
                Some(ScalarValue::Utf8(Some(name))) => {
                    ScalarValue::Utf8(setting(name).map(str::to_string))
                }
                _ => ScalarValue::Utf8(None),
            },
        ),
        f("format_type", any(), DataType::Utf8, |args, _| {
            let Some(oid) = args.first().and_then(int) else {
                return ScalarValue::Utf8(None);
            };
            ScalarValue::Utf8(type_name(oid).map(str::to_string))
        }),
        f("quote_ident", any(), DataType::Utf8, |args, _| {
            match args.first() {
                Some(ScalarValue::Utf8(Some(s))) => utf8(quote_ident(s)),
                _ => ScalarValue::Utf8(None),
            }
        }),
    ]
}

/// The name `format_type` gives the type with `oid`.
fn type_name(oid: i64) -> Option<&'static str> {
    let t = match oid {
        16 => DataType::Boolean,
        17 => DataType::Binary,
        20 => DataType::Int64,
        21 => DataType::Int16,
        23 => DataType::Int32,
        25 | 1043 => return Some("text"),
        26 => return Some("oid"),
        700 => DataType::Float32,
        701 => DataType::Float64,
        1082 => DataType::Date32,
        1083 => DataType::Time64(TimeUnit::Microsecond),
        1114 => DataType::Timestamp(TimeUnit::Microsecond, None),
        1184 => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        _ => {
            return TYPES
                .iter()
                .find(|t| t.0 == oid)
                .map(|t| t.1.trim_start_matches('_'));
        }
    };
    Some(pg_type_of(&t).1)
}

/// `s` as a Postgres identifier: quoted unless it is lower case letters, digits and
/// underscores not starting with a digit.
pub(crate) fn quote_ident(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_when_postgres_would() {
        assert_eq!(quote_ident("accounts"), "accounts");
        assert_eq!(quote_ident("Accounts"), "\"Accounts\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("1a"), "\"1a\"");
    }

    #[test]
    fn settings_are_found_as_show_spells_them() {
        assert_eq!(
            setting("transaction isolation level"),
            Some("read committed")
        );
        assert_eq!(setting("timezone"), Some("UTC"));
        assert_eq!(setting("nope"), None);
    }
}
