// Command benchgw is the gateway process of A/B measurements (bench/11-gateway-cost.sh
// GWS=NAME=BINARY:MODE): what `meshfed gateway --exports` runs, with the command's
// defaults (idle timeout 1h, 3 connect attempts, 30 s drain), plus --cpuprofile FILE
// (written at SIGTERM). It builds in seconds where cmd/meshfed, with its Kubernetes
// dependencies, takes minutes, so two builds of eastwest can be compared in one run.
package main
