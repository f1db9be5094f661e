//! [`Projection`]: which fields of a message a subscriber wants to see, its
//! JSON and query-string forms, and building the projected JSON object.

use serde_json::{Map, Value as Json};

use super::{
    FieldPath, FilterError, MAX_FIELDS, Record, check_count, check_event_paths, wrong_type,
};

/// Which fields of a message a subscriber wants to see. Empty means the
/// whole message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Projection {
    fields: Vec<FieldPath>,
}

impl Projection {
    /// A projection of these fields, within [`MAX_FIELDS`].
    pub fn new(fields: Vec<FieldPath>) -> Result<Projection, FilterError> {
        check_count("fields", fields.len(), MAX_FIELDS)?;
        Ok(Projection { fields })
    }

    /// Parse the JSON form, an array of paths; `null` is the empty projection.
    pub fn from_json(v: &Json) -> Result<Projection, FilterError> {
        let items = match v {
            Json::Null => return Ok(Projection::default()),
            Json::Array(items) => items,
            _ => return Err(wrong_type("fields", "an array of field paths")),
        };
        check_count("fields", items.len(), MAX_FIELDS)?;
        let fields = items
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let at = format!("fields[{i}]");
                let text = f
                    .as_str()
                    .ok_or_else(|| wrong_type(at.clone(), "a string"))?;
                FieldPath::parse(text, &at)
            })
            .collect::<Result<_, _>>()?;
        Projection::new(fields)
    }

    /// Parse the query-string form, comma-separated paths (`fields=name,
    /// properties.$browser`); empty entries are skipped.
    pub fn from_query(value: &str) -> Result<Projection, FilterError> {
        let fields = value
            .split(',')
            .filter(|f| !f.is_empty())
            .map(|f| FieldPath::parse(f, "fields"))
            .collect::<Result<Vec<_>, _>>()?;
        Projection::new(fields)
    }

    /// Whether every field is shown.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The fields, in the order given.
    pub fn fields(&self) -> &[FieldPath] {
        &self.fields
    }

    /// Check that every path can resolve on an event, as
    /// [`Filter::check_event_fields`](super::Filter::check_event_fields).
    pub fn check_event_fields(&self) -> Result<(), FilterError> {
        check_event_paths(self.fields.iter(), |i| format!("fields[{i}]"))
    }

    /// A JSON object with only the projected fields that are present.
    /// `properties.<key>` nests as `{"properties": {"<key>": ...}}` (the key
    /// kept whole); other dotted paths nest at every dot.
    pub fn apply(&self, r: &(impl Record + ?Sized)) -> Json {
        let mut out = Map::new();
        for path in &self.fields {
            let Some(value) = r.field(path) else { continue };
            let value = value.to_json();
            match path.property_key() {
                Some(key) => insert(&mut out, ["properties", key].into_iter(), value),
                None => insert(&mut out, path.as_str().split('.'), value),
            }
        }
        Json::Object(out)
    }
}

/// Insert `value` at the nested position `keys`, creating objects on the way;
/// skipped when a non-object is in the way (`count` and `count.x` both
/// projected).
fn insert<'k>(
    mut map: &mut Map<String, Json>,
    mut keys: impl Iterator<Item = &'k str>,
    value: Json,
) {
    let Some(mut key) = keys.next() else { return };
    for next in keys {
        let slot = map.entry(key).or_insert_with(|| Json::Object(Map::new()));
        let Json::Object(inner) = slot else { return };
        (map, key) = (inner, next);
    }
    map.insert(key.to_owned(), value);
}
