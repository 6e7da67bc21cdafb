//! The OpenAPI 3.0 description of the configured tables, served at `GET /openapi.json`.
//!
//! Generated from the [`Config`] at start, never written per table: for each table its routes
//! (only the operations it offers: a disabled operation, or undelete on a table without soft
//! delete, is left out), the query options of a list, the item schema (system columns, then the
//! user columns with their JSON types), the error body with every error code, and who may call
//! each operation (`security`: none without `[auth]`; with it, a token required or optional per
//! operation, in the configured token headers). Pure: no axum, no IO.
//!
//! Who may read the document itself: anyone when the server has no `[auth]` (every table is
//! open then anyway); with `[auth]`, only a caller with a valid token (deny by default: table
//! and column names are not for anonymous callers). The HTTP layer enforces it.
//!
//! Dynamic-schema tables get `additionalProperties: true`: columns added at run time are not in
//! the configuration, so not in the document.

use serde_json::{json, Map, Value};
use tablesync_protocol::error::ErrorCode;
use tablesync_protocol::headers::{INCLUDE_DELETED, SUPPORTED_API_VERSION, ZUMO_API_VERSION};
use tablesync_protocol::odata::sql::ColumnType;
use tablesync_protocol::system;

use crate::auth::AccessLevel;
use crate::config::{Config, IdType, TableConfig, TableOperation};

/// The document for `config`, without `servers` (the HTTP layer adds the base path a request
/// came in on, so the document stays right when an app nests the router under a prefix).
pub fn document(config: &Config) -> Value {
    let auth = config.auth.as_ref();
    let schemes: Vec<String> = auth
        .map(|a| a.token_headers.iter().map(|h| scheme_name(h)).collect())
        .unwrap_or_default();
    let mut security_schemes = Map::new();
    for header in auth.map(|a| a.token_headers.as_slice()).unwrap_or_default() {
        let scheme = if header.eq_ignore_ascii_case("authorization") {
            json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
        } else {
            json!({"type": "apiKey", "in": "header", "name": header,
                   "description": "The bare token (a JWT); an optional `Bearer ` prefix is removed."})
        };
        security_schemes.insert(scheme_name(header), scheme);
    }

    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert("ErrorBody".into(), error_body_schema());
    for table in &config.tables {
        schemas.insert(table.name.clone(), item_schema(table));
        let level = |op| table.access_level(op, auth.is_some());
        let security = |op| security(level(op), &schemes);
        let item_ref = json!({"$ref": format!("#/components/schemas/{}", table.name)});
        let tag = json!([table.name]);

        let mut collection = Map::new();
        if level(TableOperation::Read) != AccessLevel::Disabled {
            collection.insert(
                "get".into(),
                operation(
                    &format!("{}_list", table.name),
                    &format!("List {} (an OData query)", table.name),
                    &tag,
                    security(TableOperation::Read),
                    list_parameters(table, config.limits.page_size_max),
                    None,
                    json!({"200": {
                        "description": "A page of items: a bare array, or `{results, count}` with `$inlinecount=allpages`. A full page carries `Link: <next page URL>; rel=next` (the URL without angle brackets, as the Mobile Apps clients expect).",
                        "headers": {"Link": {"description": "`<URL>; rel=next` when more rows may follow.", "schema": {"type": "string"}}},
                        "content": {"application/json": {"schema": {"oneOf": [
                            {"type": "array", "items": item_ref},
                            {"type": "object", "required": ["results", "count"], "properties": {
                                "results": {"type": "array", "items": item_ref},
                                "count": {"type": "integer", "minimum": 0}}}
                        ]}}}}}),
                ),
            );
        }
        if level(TableOperation::Insert) != AccessLevel::Disabled {
            collection.insert(
                "post".into(),
                operation(
                    &format!("{}_insert", table.name),
                    &format!(
                        "Insert a {} item (the server assigns an id when none is given)",
                        table.name
                    ),
                    &tag,
                    security(TableOperation::Insert),
                    vec![param_ref("ApiVersionHeader"), param_ref("ApiVersionQuery")],
                    Some(&item_ref),
                    json!({"201": item_response(&item_ref, "The stored item."),
                           "409": item_response(&item_ref, "The id is taken: the stored item.")}),
                ),
            );
        }
        // The Node server's collection-URL writes: the id in the body (PATCH) or in `?id=`.
        let collection_conditional = json!({
            "200": item_response(&item_ref, "As on the item route."),
            "409": item_response(&item_ref, "A stale `version` in the body: the stored item."),
            "412": item_response(&item_ref, "`If-Match` does not match: the stored item.")});
        let id_query = || {
            vec![
                param_ref(id_query_param(table)),
                param_ref("ApiVersionHeader"),
                param_ref("ApiVersionQuery"),
                param_ref("IfMatch"),
            ]
        };
        if level(TableOperation::Update) != AccessLevel::Disabled {
            collection.insert(
                "patch".into(),
                operation(
                    &format!("{}_update_by_body", table.name),
                    &format!(
                        "Merge properties into a {} item named by the body's `id` (or `?id=`); answered like the item route",
                        table.name
                    ),
                    &tag,
                    security(TableOperation::Update),
                    id_query(),
                    Some(&item_ref),
                    collection_conditional.clone(),
                ),
            );
        }
        if level(TableOperation::Delete) != AccessLevel::Disabled {
            collection.insert(
                "delete".into(),
                operation(
                    &format!("{}_delete_by_query", table.name),
                    &format!(
                        "Delete the {} item named by `?id=`; answered like the item route",
                        table.name
                    ),
                    &tag,
                    security(TableOperation::Delete),
                    id_query(),
                    None,
                    collection_conditional,
                ),
            );
        }
        if !collection.is_empty() {
            paths.insert(format!("/tables/{}", table.name), Value::Object(collection));
        }

        let mut item = Map::new();
        let id_params = || {
            vec![
                param_ref(id_path_param(table)),
                param_ref("ApiVersionHeader"),
                param_ref("ApiVersionQuery"),
            ]
        };
        let with_if_match = || {
            let mut p = id_params();
            p.push(param_ref("IfMatch"));
            p
        };
        let conditional = |ok: &str| {
            json!({"200": item_response(&item_ref, ok),
                   "409": item_response(&item_ref, "A stale `version` in the body: the stored item."),
                   "412": item_response(&item_ref, "`If-Match` does not match: the stored item.")})
        };
        if level(TableOperation::Read) != AccessLevel::Disabled {
            let mut params = id_params();
            params.push(param_ref("IncludeDeleted"));
            item.insert(
                "get".into(),
                operation(
                    &format!("{}_get", table.name),
                    &format!("Read one {} item", table.name),
                    &tag,
                    security(TableOperation::Read),
                    params,
                    None,
                    json!({"200": item_response(&item_ref, "The item.")}),
                ),
            );
        }
        if level(TableOperation::Update) != AccessLevel::Disabled {
            item.insert(
                "patch".into(),
                operation(
                    &format!("{}_update", table.name),
                    &format!("Merge properties into a {} item", table.name),
                    &tag,
                    security(TableOperation::Update),
                    with_if_match(),
                    Some(&item_ref),
                    conditional("The updated item."),
                ),
            );
        }
        if level(TableOperation::Delete) != AccessLevel::Disabled {
            let ok = if table.soft_delete {
                "The tombstone (`deleted: true`)."
            } else {
                "The item as it was."
            };
            item.insert(
                "delete".into(),
                operation(
                    &format!("{}_delete", table.name),
                    &format!("Delete a {} item", table.name),
                    &tag,
                    security(TableOperation::Delete),
                    with_if_match(),
                    None,
                    conditional(ok),
                ),
            );
        }
        if table.soft_delete && level(TableOperation::Undelete) != AccessLevel::Disabled {
            item.insert(
                "post".into(),
                operation(
                    &format!("{}_undelete", table.name),
                    &format!(
                        "Undelete a soft-deleted {} item (the body is ignored)",
                        table.name
                    ),
                    &tag,
                    security(TableOperation::Undelete),
                    with_if_match(),
                    None,
                    conditional("The item, no longer deleted."),
                ),
            );
        }
        if !item.is_empty() {
            paths.insert(
                format!("/tables/{}/{{id}}", table.name),
                Value::Object(item),
            );
        }
        // The change feed (docs/extensions.md section 5): a table read, streamed.
        if level(TableOperation::Read) != AccessLevel::Disabled && config.limits.subscribers_max > 0
        {
            paths.insert(
                format!("/$changes/{}", table.name),
                json!({"get": operation(
                    &format!("{}_changes", table.name),
                    &format!("Server-Sent Events: one `change` event per {} row committed past the position, in (updatedAt, id) order", table.name),
                    &tag,
                    security(TableOperation::Read),
                    vec![
                        json!({"name": "after", "in": "query", "required": false,
                               "description": "The position `<updatedAt>|<id>` to start after (the client's delta token); absent: the current end of the table. `Last-Event-ID` wins over it.",
                               "schema": {"type": "string"}}),
                        json!({"name": "Last-Event-ID", "in": "header", "required": false,
                               "description": "The `id` of the last event received (the position to resume after).",
                               "schema": {"type": "string"}}),
                        param_ref("ApiVersionHeader"),
                        param_ref("ApiVersionQuery"),
                    ],
                    None,
                    json!({"200": {
                        "description": "An event stream: `event: change` with `data: {table, id, updatedAt, version, deleted}` and `id: <position>`; `: heartbeat` comments when idle; `event: overflow` before the server closes a subscriber that fell too far behind.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}}}}),
                )}),
            );
        }
    }

    paths.insert(
        "/$capabilities".into(),
        json!({"get": {
            "operationId": "capabilities",
            "summary": "The protocol extensions this server offers (docs/extensions.md); no API version or token needed",
            "security": [],
            "responses": {"200": {"description": "The extensions document.",
                "content": {"application/json": {"schema": {"type": "object"}}}}}}}),
    );
    // Batched writes (docs/extensions.md section 2): the batch's token applies to every
    // operation, each of which is then answered as its own route would answer it.
    let batch_security = if schemes.is_empty() {
        json!([])
    } else {
        let mut options: Vec<Value> = schemes.iter().map(|s| json!({ s: [] })).collect();
        options.insert(0, json!({}));
        Value::Array(options)
    };
    let batch_ops_max = config.limits.batch_operations_max;
    paths.insert(
        "/$batch".into(),
        json!({"post": {
            "operationId": "batch",
            "summary": "Several table writes in one request and one transaction (docs/extensions.md section 2)",
            "security": batch_security,
            "parameters": [param_ref("ApiVersionHeader"), param_ref("ApiVersionQuery")],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object", "required": ["requests"], "properties": {"requests": {
                    "type": "array", "maxItems": batch_ops_max, "items": {
                        "type": "object", "required": ["id", "method", "url"], "properties": {
                            "id": {"type": "string", "minLength": 1},
                            "method": {"type": "string", "enum": ["POST", "PATCH", "DELETE"]},
                            "url": {"type": "string", "description": "`tables/{table}` or `tables/{table}/{id}`, no query string."},
                            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                            "body": {"type": "object", "nullable": true},
                            "atomicityGroup": {"type": "string"}}}}}}}}},
            "responses": {
                "200": {"description": "One response per request, in request order, each what its own route would answer (424 for the rest of a failed atomicity group).",
                    "content": {"application/json": {"schema": {
                        "type": "object", "required": ["responses"], "properties": {"responses": {
                            "type": "array", "items": {
                                "type": "object", "required": ["id", "status"], "properties": {
                                    "id": {"type": "string"},
                                    "status": {"type": "integer"},
                                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                                    "body": {"type": "object", "nullable": true}}}}}}}}},
                "400": {"$ref": "#/components/responses/Error"},
                "401": {"$ref": "#/components/responses/Error"},
                "413": {"$ref": "#/components/responses/Error"},
                "415": {"$ref": "#/components/responses/Error"},
                "422": {"$ref": "#/components/responses/Error"},
                "500": {"$ref": "#/components/responses/Error"},
                "503": {"$ref": "#/components/responses/Error"}}}}),
    );
    let document_security = if schemes.is_empty() {
        json!([])
    } else {
        Value::Array(schemes.iter().map(|s| json!({ s: [] })).collect())
    };
    paths.insert(
        "/openapi.json".into(),
        json!({"get": {
            "operationId": "openapi",
            "summary": "This document (with [auth]: a valid token required)",
            "security": document_security,
            "responses": {
                "200": {"description": "The OpenAPI document.",
                    "content": {"application/json": {"schema": {"type": "object"}}}},
                "401": {"$ref": "#/components/responses/Error"}}}}),
    );

    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "tablesync",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "The Azure Mobile Apps table protocol (ZUMO-API-VERSION {SUPPORTED_API_VERSION}) for the configured tables. Every error answer is an `ErrorBody`, except 409 and 412, whose body is the server's current item with its `ETag`."),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "parameters": shared_parameters(),
            "responses": {"Error": {
                "description": "An error; `code` says which.",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}},
            "securitySchemes": security_schemes,
        },
    })
}

/// The shared path parameter naming a table's item id.
fn id_path_param(table: &TableConfig) -> &'static str {
    match table.id_type {
        IdType::String => "Id",
        IdType::Integer => "IntId",
    }
}

/// The shared `?id=` parameter of a table's collection-URL writes.
fn id_query_param(table: &TableConfig) -> &'static str {
    match table.id_type {
        IdType::String => "IdQuery",
        IdType::Integer => "IntIdQuery",
    }
}

/// The `securitySchemes` key of a token header (`X-ZUMO-AUTH` → `x-zumo-auth`).
fn scheme_name(header: &str) -> String {
    header.to_ascii_lowercase()
}

/// An operation's `security`: none at all without `[auth]` (an empty list); a token in any of
/// the configured headers when `authenticated`; optionally (`{}` first) when `anonymous`.
fn security(level: AccessLevel, schemes: &[String]) -> Value {
    if schemes.is_empty() {
        return json!([]);
    }
    let mut options: Vec<Value> = schemes.iter().map(|s| json!({ s: [] })).collect();
    if level == AccessLevel::Anonymous {
        options.insert(0, json!({}));
    }
    Value::Array(options)
}

/// One operation with the error answers every table route can give.
#[allow(clippy::too_many_arguments)]
fn operation(
    id: &str,
    summary: &str,
    tag: &Value,
    security: Value,
    parameters: Vec<Value>,
    body: Option<&Value>,
    responses: Value,
) -> Value {
    let mut responses = match responses {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for status in [
        "400", "401", "404", "405", "413", "415", "500", "503", "504",
    ] {
        responses
            .entry(status)
            .or_insert_with(|| json!({"$ref": "#/components/responses/Error"}));
    }
    let mut op = json!({
        "operationId": id,
        "summary": summary,
        "tags": tag,
        "security": security,
        "parameters": parameters,
        "responses": responses,
    });
    if let Some(schema) = body {
        op["requestBody"] = json!({"required": true,
            "content": {"application/json": {"schema": schema}}});
    }
    op
}

fn param_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/parameters/{name}")})
}

fn item_response(item_ref: &Value, description: &str) -> Value {
    json!({"description": description,
        "headers": {"ETag": {"description": "The item's version as an entity tag.", "schema": {"type": "string"}}},
        "content": {"application/json": {"schema": item_ref}}})
}

/// The parameters of a list request: the OData options of protocol.md 4, bounded as configured.
fn list_parameters(table: &TableConfig, page_size_max: u64) -> Vec<Value> {
    let query = |name: &str, description: &str, schema: Value| {
        json!({"name": name, "in": "query", "required": false,
               "description": description, "schema": schema})
    };
    vec![
        param_ref("ApiVersionHeader"),
        param_ref("ApiVersionQuery"),
        query(
            "$filter",
            "An OData filter over the item's columns (protocol.md 4.1).",
            json!({"type": "string"}),
        ),
        query(
            "$orderby",
            "Comma-separated `column [asc|desc]`; `id` is appended as a tiebreak.",
            json!({"type": "string"}),
        ),
        query(
            "$select",
            "Comma-separated columns, or `*`.",
            json!({"type": "string"}),
        ),
        query(
            "$top",
            &format!("Rows in the page (default {}).", table.page_size),
            json!({"type": "integer", "minimum": 0, "maximum": page_size_max, "default": table.page_size}),
        ),
        query(
            "$skip",
            "Rows to skip.",
            json!({"type": "integer", "minimum": 0, "default": 0}),
        ),
        query(
            "$inlinecount",
            "`allpages`: answer `{results, count}` with the number of matching rows.",
            json!({"type": "string", "enum": ["allpages", "none"]}),
        ),
        param_ref("IncludeDeleted"),
    ]
}

fn shared_parameters() -> Value {
    json!({
        "ApiVersionHeader": {"name": ZUMO_API_VERSION, "in": "header", "required": false,
            "description": format!("`{SUPPORTED_API_VERSION}` (any 2.0.x). Required on table routes, as this header or as the query parameter."),
            "schema": {"type": "string", "example": SUPPORTED_API_VERSION}},
        "ApiVersionQuery": {"name": ZUMO_API_VERSION, "in": "query", "required": false,
            "description": "The API version when the header is not sent (the key matches in any case).",
            "schema": {"type": "string", "example": SUPPORTED_API_VERSION}},
        "Id": {"name": "id", "in": "path", "required": true,
            "description": "The item's id (percent-encoded).",
            "schema": {"type": "string", "maxLength": system::ID_CHARS_MAX}},
        "IntId": {"name": "id", "in": "path", "required": true,
            "description": "The item's id (an integer-id table).",
            "schema": {"type": "integer", "format": "int64"}},
        "IdQuery": {"name": "id", "in": "query", "required": false,
            "description": "The item's id, when the body does not name it (PATCH) or has none (DELETE).",
            "schema": {"type": "string", "maxLength": system::ID_CHARS_MAX}},
        "IntIdQuery": {"name": "id", "in": "query", "required": false,
            "description": "The item's id (an integer-id table), when the body does not name it.",
            "schema": {"type": "integer", "format": "int64"}},
        "IfMatch": {"name": "If-Match", "in": "header", "required": false,
            "description": "Only if the item's version is one of these entity tags (`*`: any).",
            "schema": {"type": "string"}},
        "IncludeDeleted": {"name": INCLUDE_DELETED, "in": "query", "required": false,
            "description": "`true`: soft-deleted items are included.",
            "schema": {"type": "boolean", "default": false}},
    })
}

/// `{"error", "code", "position"}` with every code the server answers with.
fn error_body_schema() -> Value {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    json!({"type": "object", "required": ["error", "code"], "properties": {
        "error": {"type": "string", "description": "A message for people."},
        "code": {"type": "string", "enum": codes, "description": "A stable code for programs."},
        "position": {"type": "integer", "minimum": 0,
            "description": "Byte offset into the offending query option (parse errors)."}}})
}

/// System columns, then the table's user columns; `additionalProperties` only with dynamic
/// schema.
fn item_schema(table: &TableConfig) -> Value {
    let mut properties = Map::new();
    let id = match table.id_type {
        IdType::String => json!({"type": "string", "maxLength": system::ID_CHARS_MAX,
               "description": "Unique per table; the server makes one (a UUID) when an insert has none."}),
        IdType::Integer => json!({"type": "integer", "format": "int64", "readOnly": true,
               "description": "Assigned by the database; an insert may not carry one."}),
    };
    properties.insert(system::ID.into(), id);
    properties.insert(
        system::CREATED_AT.into(),
        json!({"type": "string", "format": "date-time", "readOnly": true}),
    );
    properties.insert(
        system::UPDATED_AT.into(),
        json!({"type": "string", "format": "date-time", "readOnly": true}),
    );
    properties.insert(
        system::VERSION.into(),
        json!({"type": "string", "format": "byte",
               "description": "Opaque; changes on every write. In an update body it is the expected version."}),
    );
    properties.insert(
        system::DELETED.into(),
        json!({"type": "boolean", "readOnly": true}),
    );
    for (name, column) in &table.columns {
        if table.owner_column.as_deref() == Some(name.as_str()) {
            properties.insert(
                name.clone(),
                json!({"type": "string", "readOnly": true, "nullable": true,
                       "description": "The owner's user id, from the caller's token."}),
            );
            continue;
        }
        properties.insert(name.clone(), column_schema(*column));
    }
    if let Some(owner) = &table.owner_column {
        properties.entry(owner.clone()).or_insert_with(|| {
            json!({"type": "string", "readOnly": true,
                   "description": "The owner's user id, from the caller's token."})
        });
    }
    json!({"type": "object", "properties": properties,
           "additionalProperties": table.dynamic_schema})
}

fn column_schema(column: ColumnType) -> Value {
    match column {
        ColumnType::String => json!({"type": "string", "nullable": true}),
        ColumnType::Number => json!({"type": "number", "nullable": true}),
        ColumnType::Boolean => json!({"type": "boolean", "nullable": true}),
        ColumnType::Date => json!({"type": "string", "format": "date-time", "nullable": true}),
    }
}
