//! Checking a structured query as Firestore does, into a [`Checked`] form
//! the evaluation can trust: parsed field paths, operators as enums, the
//! full order with Firestore's implicit part, and cursors, offset and limit
//! as plain numbers.
//!
//! Error texts follow Google's Firestore emulator word for word where it
//! has one (the tests pin them); user input is echoed bounded.

use latchkey_core::echo;
use latchkey_documents::{DatabaseName, FieldPath};

use crate::Status;
use crate::encoding::{MAX_QUERY_BYTES, MAX_QUERY_STRING_BYTES};
use crate::order::type_rank;
use crate::proto::structured_query::{
    Direction, Filter, composite_filter, field_filter, filter::FilterType, unary_filter,
};
use crate::proto::value::ValueType;
use crate::proto::{Cursor, StructuredQuery, Value};

/// Most values an `IN` or `ARRAY_CONTAINS_ANY` filter may list.
pub(crate) const MAX_IN_VALUES: usize = 30;
/// Most values a `NOT_IN` filter may list.
pub(crate) const MAX_NOT_IN_VALUES: usize = 10;
/// Most distinct fields a query's inequalities may name.
pub(crate) const MAX_INEQUALITY_FIELDS: usize = 10;
/// Most disjunctions a filter may have once in disjunctive normal form.
pub(crate) const MAX_DISJUNCTIONS: u128 = 30;

/// A field a filter or an order names: the document's name, or a path
/// into its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Field {
    /// `__name__`: the document's full resource name, as a reference.
    Name,
    /// A field path's segments.
    Path(Vec<String>),
}

impl Field {
    pub(crate) fn parse(path: &str) -> Result<Self, Status> {
        if path.is_empty() {
            return Err(Status::invalid("Invalid empty property path string."));
        }
        let parsed = FieldPath::parse(path).map_err(|_| {
            Status::invalid(format!(
                "Invalid property path \"{}\". Unquoted property paths must match regex \
                 ([a-zA-Z_][a-zA-Z_0-9]*), and quoted property paths must match regex \
                 (`(?:[^`\\\\]|(?:\\\\.))+`)",
                echo(path)
            ))
        })?;
        let segments = parsed.segments();
        if segments.len() == 1 && segments[0] == "__name__" {
            return Ok(Self::Name);
        }
        // Firestore reserves `__.+__` field names; a filter or order on
        // one is refused with this wording (confirmed on the emulator by
        // the gateway's boundary table).
        if segments
            .iter()
            .any(|s| s.len() >= 5 && s.starts_with("__") && s.ends_with("__"))
        {
            return Err(Status::invalid(format!(
                "Invalid reserved name in field path {}",
                echo(path)
            )));
        }
        Ok(Self::Path(segments.to_vec()))
    }

    /// How the field shows in messages.
    pub(crate) fn display(&self) -> String {
        match self {
            Self::Name => "__name__".to_owned(),
            Self::Path(segments) => FieldPath::from_segments(segments.clone())
                .map(|p| p.to_string())
                .unwrap_or_else(|_| segments.join(".")),
        }
    }

    /// Firestore's order of field paths: segment by segment, by UTF-8
    /// bytes; the name before every path.
    fn cmp_path(&self, other: &Self) -> std::cmp::Ordering {
        match (self, other) {
            (Self::Name, Self::Name) => std::cmp::Ordering::Equal,
            (Self::Name, _) => std::cmp::Ordering::Less,
            (_, Self::Name) => std::cmp::Ordering::Greater,
            (Self::Path(a), Self::Path(b)) => a
                .iter()
                .map(String::as_bytes)
                .cmp(b.iter().map(String::as_bytes)),
        }
    }
}

/// A comparison of a field with one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A checked filter.
#[derive(Debug, Clone)]
pub(crate) enum Pred {
    /// Every one holds (an empty `AND` holds for every document).
    And(Vec<Pred>),
    /// At least one holds.
    Or(Vec<Pred>),
    /// `<`, `<=`, `>`, `>=`: only values of the same type as `value`.
    Cmp(Field, Cmp, Value),
    /// `==`.
    Eq(Field, Value),
    /// `!=`: never a missing field or null.
    Ne(Field, Value),
    /// `in`.
    In(Field, Vec<Value>),
    /// `not-in`: never a missing field or null.
    NotIn(Field, Vec<Value>),
    /// `array-contains`.
    ArrayContains(Field, Value),
    /// `array-contains-any`.
    ArrayContainsAny(Field, Vec<Value>),
    /// `IS_NAN`.
    IsNan(Field),
    /// `IS_NULL`.
    IsNull(Field),
    /// `IS_NOT_NAN`: never a missing field or null.
    IsNotNan(Field),
    /// `IS_NOT_NULL`.
    IsNotNull(Field),
}

impl Pred {
    /// The field of an inequality (a filter that orders by its field).
    fn inequality_field(&self) -> Option<&Field> {
        match self {
            Self::Cmp(f, ..)
            | Self::Ne(f, _)
            | Self::NotIn(f, _)
            | Self::IsNotNan(f)
            | Self::IsNotNull(f) => Some(f),
            _ => None,
        }
    }

    fn walk<'a>(&'a self, visit: &mut impl FnMut(&'a Pred)) {
        visit(self);
        if let Self::And(ps) | Self::Or(ps) = self {
            for p in ps {
                p.walk(visit);
            }
        }
    }

    /// How many disjunctions the filter has in disjunctive normal form
    /// (`in` and `array-contains-any` count one per value), saturating.
    fn disjunctions(&self) -> u128 {
        match self {
            Self::And(ps) => ps
                .iter()
                .fold(1u128, |n, p| n.saturating_mul(p.disjunctions())),
            Self::Or(ps) => ps
                .iter()
                .fold(0u128, |n, p| n.saturating_add(p.disjunctions())),
            Self::In(_, vs) | Self::ArrayContainsAny(_, vs) => vs.len() as u128,
            _ => 1,
        }
    }

    /// The most `array-contains` and `array-contains-any` filters in any
    /// one disjunction: in an `AND` every child contributes its worst
    /// disjunction at once, in an `OR` only the worst child counts.
    fn array_contains_per_disjunction(&self) -> usize {
        match self {
            Self::And(ps) => ps.iter().map(Self::array_contains_per_disjunction).sum(),
            Self::Or(ps) => ps
                .iter()
                .map(Self::array_contains_per_disjunction)
                .max()
                .unwrap_or(0),
            Self::ArrayContains(..) | Self::ArrayContainsAny(..) => 1,
            _ => 0,
        }
    }
}

/// One key of the query's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrderKey {
    /// What is ordered by.
    pub(crate) field: Field,
    /// Descending rather than ascending.
    pub(crate) descending: bool,
}

/// A cursor, checked.
#[derive(Debug, Clone)]
pub(crate) struct CheckedCursor {
    /// Values for the first orders, positionally.
    pub(crate) values: Vec<Value>,
    /// Whether the cursor sits before the documents equal to it.
    pub(crate) before: bool,
}

/// What the selector says about where the candidates are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct From {
    /// The collection id; `None` for a kindless query (any collection).
    pub(crate) collection_id: Option<String>,
    /// Whether the query reaches below the parent's own collections.
    pub(crate) all_descendants: bool,
}

/// A query Firestore would run.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    pub(crate) from: From,
    pub(crate) filter: Option<Pred>,
    /// The whole order: explicit, then inequality fields, then the name.
    pub(crate) orders: Vec<OrderKey>,
    pub(crate) start_at: Option<CheckedCursor>,
    pub(crate) end_at: Option<CheckedCursor>,
    pub(crate) offset: usize,
    pub(crate) limit: Option<usize>,
    /// The field paths to return; `None` returns whole documents.
    pub(crate) projection: Option<Vec<Vec<String>>>,
}

/// Checks `query`; `database`, when known, is the database every reference
/// in it must point into.
pub(crate) fn check(
    query: &StructuredQuery,
    database: Option<&DatabaseName>,
) -> Result<Checked, Status> {
    if query.find_nearest.is_some() {
        return Err(Status::unimplemented(
            "vector search (`find_nearest`) is not supported by Latchkey's embedded store",
        ));
    }
    let from = check_from(query)?;
    let kindless = from.collection_id.is_none();
    let ctx = Ctx { database, kindless };

    let filter = query.r#where.as_ref().map(|f| ctx.filter(f)).transpose()?;
    if let Some(f) = &filter {
        check_filter_combination(f)?;
    }

    let mut orders = Vec::new();
    for o in &query.order_by {
        let field = Field::parse(o.field.as_ref().map_or("", |f| f.field_path.as_str()))?;
        let descending = match Direction::try_from(o.direction) {
            Ok(Direction::Unspecified | Direction::Ascending) => false,
            Ok(Direction::Descending) => true,
            Err(_) => return Err(Status::invalid("Unrecognized ordering.")),
        };
        if kindless && (field != Field::Name || descending) {
            return Err(Status::invalid(
                "kind is required for all orders except __key__ ascending",
            ));
        }
        if orders.iter().any(|k: &OrderKey| k.field == field) {
            return Err(Status::invalid(format!(
                "order by clause cannot contain duplicate fields {}",
                echo(&field.display())
            )));
        }
        if orders.iter().any(|k: &OrderKey| k.field == Field::Name) {
            return Err(after_key());
        }
        orders.push(OrderKey { field, descending });
    }
    let explicit = orders.len();

    // Implicit order: the inequality fields not ordered explicitly, in
    // field path order, then the name; all in the last order's direction.
    let descending = orders.last().is_some_and(|k| k.descending);
    let mut inequalities: Vec<Field> = Vec::new();
    if let Some(f) = &filter {
        f.walk(&mut |p| {
            // `__name__` is always ordered last, so it never joins here.
            if let Some(field) = p.inequality_field()
                && *field != Field::Name
                && !inequalities.contains(field)
            {
                inequalities.push(field.clone());
            }
        });
    }
    inequalities.sort_by(Field::cmp_path);
    if inequalities.len() > MAX_INEQUALITY_FIELDS {
        let list: Vec<String> = inequalities.iter().map(Field::display).collect();
        return Err(Status::invalid(format!(
            "The query contains {} distinct inequality fields: [{}]. A query may not have more \
             than {MAX_INEQUALITY_FIELDS} distinct inequality fields.",
            inequalities.len(),
            echo(&list.join(", "))
        )));
    }
    inequalities.retain(|field| !orders.iter().any(|k| &k.field == field));
    for field in inequalities {
        if orders.iter().any(|k| k.field == Field::Name) {
            return Err(after_key());
        }
        orders.push(OrderKey { field, descending });
    }
    if !orders.iter().any(|k| k.field == Field::Name) {
        orders.push(OrderKey {
            field: Field::Name,
            descending,
        });
    }

    let start_at = query
        .start_at
        .as_ref()
        .map(|c| ctx.cursor(c, &orders[..explicit]))
        .transpose()?;
    let end_at = query
        .end_at
        .as_ref()
        .map(|c| ctx.cursor(c, &orders[..explicit]))
        .transpose()?;

    let offset =
        usize::try_from(query.offset).map_err(|_| Status::invalid("offset is negative"))?;
    let limit = query
        .limit
        .map(|l| usize::try_from(l).map_err(|_| Status::invalid("limit is negative")))
        .transpose()?;

    let projection = match &query.select {
        None => None,
        Some(p) => {
            let mut paths = Vec::new();
            for f in &p.fields {
                match Field::parse(&f.field_path)? {
                    // The name alone selects no fields.
                    Field::Name => {}
                    Field::Path(segments) => paths.push(segments),
                }
            }
            Some(paths)
        }
    };

    Ok(Checked {
        from,
        filter,
        orders,
        start_at,
        end_at,
        offset,
        limit,
        projection,
    })
}

fn after_key() -> Status {
    Status::invalid("order by clause cannot contain more fields after the key")
}

fn check_from(query: &StructuredQuery) -> Result<From, Status> {
    match query.from.as_slice() {
        // No selector at all: kindless, the parent's own collections.
        [] => Ok(From {
            collection_id: None,
            all_descendants: false,
        }),
        [one] => {
            let id = &one.collection_id;
            if id.contains('/') {
                return Err(Status::invalid(format!(
                    "Collection id \"{}\" is invalid because it contains \"/\".",
                    echo(id)
                )));
            }
            if id.len() >= 4 && id.starts_with("__") && id.ends_with("__") {
                return Err(Status::invalid(format!(
                    "Collection id \"{}\" is invalid because it is reserved.",
                    echo(id)
                )));
            }
            Ok(From {
                collection_id: (!id.is_empty()).then(|| id.clone()),
                all_descendants: one.all_descendants,
            })
        }
        _ => Err(Status::invalid(
            "StructuredQuery.from cannot have more than one collection selector.",
        )),
    }
}

/// What checking a filter or cursor needs to know.
struct Ctx<'a> {
    database: Option<&'a DatabaseName>,
    kindless: bool,
}

impl Ctx<'_> {
    fn filter(&self, filter: &Filter) -> Result<Pred, Status> {
        match &filter.filter_type {
            None => Err(Status::invalid("Unknown Filter type.")),
            Some(FilterType::CompositeFilter(c)) => {
                let children = c
                    .filters
                    .iter()
                    .map(|f| self.filter(f))
                    .collect::<Result<Vec<_>, _>>()?;
                match composite_filter::Operator::try_from(c.op) {
                    Ok(composite_filter::Operator::And) => Ok(Pred::And(children)),
                    Ok(composite_filter::Operator::Or) if children.is_empty() => Err(
                        Status::invalid("Composite filter must have at least one sub-filter."),
                    ),
                    Ok(composite_filter::Operator::Or) => Ok(Pred::Or(children)),
                    _ => Err(Status::invalid("Unsupported CompositeFilter operator.")),
                }
            }
            Some(FilterType::FieldFilter(f)) => {
                let field = Field::parse(f.field.as_ref().map_or("", |f| f.field_path.as_str()))?;
                let Ok(op) = field_filter::Operator::try_from(f.op) else {
                    return Err(unknown_field_op());
                };
                let value = match &f.value {
                    Some(v) if v.value_type.is_some() => v.clone(),
                    _ => {
                        return Err(Status::invalid(
                            "Cannot convert firestore.v1.Value with type unset.",
                        ));
                    }
                };
                self.field_filter(field, op, value)
            }
            Some(FilterType::UnaryFilter(u)) => {
                let path = match &u.operand_type {
                    Some(unary_filter::OperandType::Field(f)) => f.field_path.as_str(),
                    None => "",
                };
                let field = Field::parse(path)?;
                let op = unary_filter::Operator::try_from(u.op)
                    .ok()
                    .filter(|op| *op != unary_filter::Operator::Unspecified)
                    .ok_or_else(|| Status::invalid("Unknown UnaryFilter operator."))?;
                if field == Field::Name {
                    return Err(not_a_key());
                }
                self.kind_required(&field)?;
                Ok(match op {
                    unary_filter::Operator::IsNan => Pred::IsNan(field),
                    unary_filter::Operator::IsNull => Pred::IsNull(field),
                    unary_filter::Operator::IsNotNan => Pred::IsNotNan(field),
                    _ => Pred::IsNotNull(field),
                })
            }
        }
    }

    fn kind_required(&self, field: &Field) -> Result<(), Status> {
        if self.kindless && *field != Field::Name {
            return Err(Status::invalid(format!(
                "kind is required for filter: {}",
                echo(&field.display())
            )));
        }
        Ok(())
    }

    fn field_filter(
        &self,
        field: Field,
        op: field_filter::Operator,
        value: Value,
    ) -> Result<Pred, Status> {
        use field_filter::Operator as Op;
        self.kind_required(&field)?;
        let list = |name: &str, max: usize| -> Result<Vec<Value>, Status> {
            let Some(ValueType::ArrayValue(a)) = &value.value_type else {
                return Err(Status::invalid(format!("'{name}' requires an ArrayValue.")));
            };
            if a.values.is_empty() {
                return Err(Status::invalid(format!(
                    "'{name}' requires an non-empty ArrayValue."
                )));
            }
            if a.values.len() > max {
                return Err(Status::invalid(format!(
                    "'{name}' supports up to {max} comparison values."
                )));
            }
            Ok(a.values.clone())
        };
        let pred = match op {
            Op::Unspecified => return Err(unknown_field_op()),
            Op::LessThan => Pred::Cmp(field, Cmp::Lt, value.clone()),
            Op::LessThanOrEqual => Pred::Cmp(field, Cmp::Le, value.clone()),
            Op::GreaterThan => Pred::Cmp(field, Cmp::Gt, value.clone()),
            Op::GreaterThanOrEqual => Pred::Cmp(field, Cmp::Ge, value.clone()),
            Op::Equal => Pred::Eq(field, value.clone()),
            Op::NotEqual => Pred::Ne(field, value.clone()),
            Op::In => Pred::In(field, list("IN", MAX_IN_VALUES)?),
            Op::NotIn => Pred::NotIn(field, list("NOT_IN", MAX_NOT_IN_VALUES)?),
            Op::ArrayContains => Pred::ArrayContains(field, value.clone()),
            Op::ArrayContainsAny => {
                Pred::ArrayContainsAny(field, list("ARRAY_CONTAINS_ANY", MAX_IN_VALUES)?)
            }
        };
        // Values longer than queries tell apart are refused.
        let too_large = |v: &Value| match &v.value_type {
            Some(ValueType::StringValue(s)) => s.len() > MAX_QUERY_STRING_BYTES,
            Some(ValueType::BytesValue(b)) => b.len() > MAX_QUERY_BYTES,
            _ => false,
        };
        let large = match &pred {
            Pred::Cmp(_, _, v) | Pred::Eq(_, v) | Pred::Ne(_, v) | Pred::ArrayContains(_, v) => {
                too_large(v)
            }
            Pred::In(_, vs) | Pred::NotIn(_, vs) | Pred::ArrayContainsAny(_, vs) => {
                vs.iter().any(too_large)
            }
            _ => false,
        };
        if large {
            return Err(Status::invalid(format!(
                "value for {} is too large to be used in a query",
                echo(&field_name(&pred))
            )));
        }
        // Name filters compare document references.
        match &pred {
            Pred::ArrayContains(Field::Name, _) | Pred::ArrayContainsAny(Field::Name, _) => {
                return Err(Status::invalid("the name __key__ is reserved"));
            }
            Pred::Cmp(Field::Name, _, v) | Pred::Eq(Field::Name, v) | Pred::Ne(Field::Name, v) => {
                self.key_value(v, not_a_key)?;
            }
            Pred::In(Field::Name, vs) | Pred::NotIn(Field::Name, vs) => {
                for v in vs {
                    self.key_value(v, not_a_key)?;
                }
            }
            _ => {}
        }
        Ok(pred)
    }

    /// A value compared with `__name__` must be a reference to a document
    /// in the request's database.
    fn key_value(&self, value: &Value, not_key: fn() -> Status) -> Result<(), Status> {
        let Some(ValueType::ReferenceValue(r)) = &value.value_type else {
            return Err(not_key());
        };
        check_reference(r, self.database)
    }

    fn cursor(&self, cursor: &Cursor, explicit: &[OrderKey]) -> Result<CheckedCursor, Status> {
        if cursor.values.len() > explicit.len() {
            return Err(Status::invalid("Cursor has too many values."));
        }
        for (v, k) in cursor.values.iter().zip(explicit) {
            if v.value_type.is_none() {
                return Err(Status::invalid(
                    "Cannot convert firestore.v1.Value with type unset.",
                ));
            }
            if k.field == Field::Name {
                self.key_value(v, || {
                    Status::invalid("Cursor __key__ value is not a document reference.")
                })?;
            }
        }
        Ok(CheckedCursor {
            values: cursor.values.clone(),
            before: cursor.before,
        })
    }
}

/// The field a field filter names, for messages.
fn field_name(pred: &Pred) -> String {
    match pred {
        Pred::Cmp(f, ..)
        | Pred::Eq(f, _)
        | Pred::Ne(f, _)
        | Pred::In(f, _)
        | Pred::NotIn(f, _)
        | Pred::ArrayContains(f, _)
        | Pred::ArrayContainsAny(f, _) => f.display(),
        _ => String::new(),
    }
}

fn unknown_field_op() -> Status {
    Status::invalid("Unknown FieldFilter operator.")
}

fn not_a_key() -> Status {
    Status::invalid("__key__ filter value must be a Key")
}

/// Checks a reference value's shape: a document (an even number of
/// non-empty segments after `documents`) in `database` when known.
pub(crate) fn check_reference(name: &str, database: Option<&DatabaseName>) -> Result<(), Status> {
    let parts: Vec<&str> = name.split('/').collect();
    let shaped = parts.len() >= 5
        && parts[0] == "projects"
        && parts[2] == "databases"
        && parts[4] == "documents"
        && !parts[1].is_empty()
        && !parts[3].is_empty();
    if !shaped {
        return Err(Status::invalid(format!(
            "`{}` is not a document reference: expected \
             `projects/{{project}}/databases/{{database}}/documents/{{document path}}`",
            echo(name)
        )));
    }
    if let Some(db) = database
        && (db.project != parts[1] || db.database != parts[3])
    {
        return Err(Status::invalid(format!(
            "The request was for database '{db}' but was attempting to access database \
             'projects/{}/databases/{}'",
            echo(parts[1]),
            echo(parts[3])
        )));
    }
    let path = &parts[5..];
    if path.iter().any(|s| s.is_empty()) {
        return Err(Status::invalid(format!(
            "Resource name \"{}\" has an empty id.",
            echo(name)
        )));
    }
    if path.is_empty() || path.len() % 2 == 1 {
        return Err(Status::invalid(format!(
            "Resource name \"{}\" lacks \"/\" at index {}.",
            echo(name),
            name.len()
        )));
    }
    Ok(())
}

/// The rules about which filters go together.
fn check_filter_combination(filter: &Pred) -> Result<(), Status> {
    let (mut negations, mut not_in, mut in_like, mut or) = (0, false, false, false);
    filter.walk(&mut |p| match p {
        Pred::Ne(..) | Pred::IsNotNan(_) | Pred::IsNotNull(_) => negations += 1,
        Pred::NotIn(..) => {
            negations += 1;
            not_in = true;
        }
        Pred::In(..) | Pred::ArrayContainsAny(..) => in_like = true,
        // Even an `OR` of one filter counts (the emulator refuses it too).
        Pred::Or(_) => or = true,
        _ => {}
    });
    if negations > 1 {
        return Err(Status::invalid(
            "Only a single 'NOT_EQUAL', 'NOT_IN', 'IS_NOT_NAN', or 'IS_NOT_NULL' filter allowed \
             per query.",
        ));
    }
    if not_in && (in_like || or) {
        return Err(Status::invalid(
            "'NOT_IN' cannot be used in the same query with 'IN', 'ARRAY_CONTAINS_ANY' or 'OR'.",
        ));
    }
    let n = filter.disjunctions();
    if n > MAX_DISJUNCTIONS {
        return Err(Status::invalid(format!(
            "Too many disjunctions after normalization. Result had {n} disjunctions which is \
             more than the maximum of {MAX_DISJUNCTIONS}"
        )));
    }
    if filter.array_contains_per_disjunction() > 1 {
        return Err(Status::invalid(
            "A maximum of 1 'ARRAY_CONTAINS' filter is allowed per disjunction.",
        ));
    }
    Ok(())
}

/// Whether `value` can never match an equality: null and NaN match only
/// through `IS_NULL` and `IS_NAN`.
pub(crate) fn never_equal(value: &Value) -> bool {
    matches!(type_rank(value), 0 | 2)
}
