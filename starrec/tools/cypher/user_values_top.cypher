// Inspect mined value profiles: every profiled user with their three strongest values,
// optionally only those whose top values include $value ('' = every profiled user).
// Params: $value (a Schwartz value name such as 'benevolence', or '' for every profiled user), $limit (rows).
MATCH (u:User)
WHERE u.values_profile IS NOT NULL AND ($value = '' OR $value IN u.values_top)
RETURN u.id AS id, u.values_top AS top, u.values_by AS by
ORDER BY id
LIMIT $limit
