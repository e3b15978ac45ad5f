"""The MARS LangGraph: state, context, nodes, routing and the compiled graph."""
