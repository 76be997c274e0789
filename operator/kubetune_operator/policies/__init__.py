"""Pure policies, one per file, composed by `decide`: observed children (and the spec) in, a Decision
out. The same observation always gives the same decision, whatever the operator did before."""
