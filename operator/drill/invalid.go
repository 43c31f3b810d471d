package drill

import "github.com/meshfed/meshfed/operator"

// InvalidError is a drill that cannot run, with every problem found at once (the operator
// fixes them all in one pass). Each problem names the Request field it is about ("Fail",
// "LeaseTTL", "From/Target"); the caller says what that field is to its user
// (cmd/meshfed: a flag, with Rename). It is operator.InvalidError.
type InvalidError = operator.InvalidError

// Problem is one problem with a Request.
type Problem = operator.Problem
