// The mined value profile of one user (the user_values tool's lookup; also for inspecting a user).
// values_profile is the profile's JSON (starrec.contract.values.ValueProfile.to_dict): ten values,
// each with a weight in [0, 1], a one-line reason and the item ids it cites; values_top lists the
// three strongest values, strongest first. Params: $id (user id).
MATCH (u:User {id: $id})
RETURN u.id AS id, u.values_profile AS values_json, u.values_top AS top, u.values_by AS by
