// The Python module of the CPU kernels (window_attention.cpp, layer_norm.cpp, gelu.cpp, token_linear.cpp,
// pre_norm.cpp), built by cpu_kernels.py.
#include <torch/extension.h>
#include <vector>

#include "lanes.h"

torch::Tensor window_attention(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor bias,
                               torch::Tensor mask, double scale);
torch::Tensor window_attention_backward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor bias,
                                        torch::Tensor mask, torch::Tensor grad, double scale, torch::Tensor dq,
                                        torch::Tensor dk, torch::Tensor dv);
std::vector<torch::Tensor> layer_norm(torch::Tensor x, torch::Tensor weight, torch::Tensor bias, double eps);
std::vector<torch::Tensor> layer_norm_backward(torch::Tensor x, torch::Tensor weight, torch::Tensor mean,
                                               torch::Tensor rstd, torch::Tensor grad);
torch::Tensor gelu(torch::Tensor x, torch::Tensor bias, torch::Tensor out);
torch::Tensor gelu_backward(torch::Tensor x, torch::Tensor grad);
torch::Tensor token_linear(torch::Tensor x, torch::Tensor weight, torch::Tensor bias, torch::Tensor out,
                           torch::Tensor add);
std::vector<torch::Tensor> norm_linear_backward(torch::Tensor x, torch::Tensor grad, torch::Tensor norm_weight,
                                                torch::Tensor norm_bias, double eps, torch::Tensor weight,
                                                torch::Tensor carry);
std::vector<torch::Tensor> token_linear_backward(torch::Tensor x, torch::Tensor weight, torch::Tensor grad,
                                                 bool need_input_grad);
torch::Tensor norm_linear(torch::Tensor x, torch::Tensor norm_weight, torch::Tensor norm_bias, double eps,
                          torch::Tensor weight, torch::Tensor bias, torch::Tensor rows);
torch::Tensor residuals(torch::Tensor x, torch::Tensor attended, torch::Tensor wp, torch::Tensor bp,
                        torch::Tensor norm_weight, torch::Tensor norm_bias, double eps, torch::Tensor w1,
                        torch::Tensor b1, torch::Tensor w2, torch::Tensor b2, torch::Tensor out, torch::Tensor dest,
                        bool in_map);
std::vector<torch::Tensor> residuals_backward(torch::Tensor x, torch::Tensor attended, torch::Tensor grad,
                                              torch::Tensor wp, torch::Tensor bp, torch::Tensor norm_weight,
                                              torch::Tensor norm_bias, double eps, torch::Tensor w1, torch::Tensor b1,
                                              torch::Tensor w2, torch::Tensor b2, torch::Tensor dest);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.attr("lanes") = dcif::kLanes;  // floats per register the build chose (lanes.h): 16 with AVX-512, else 8
  m.def("window_attention", &window_attention, "softmax(scale Q K^T + bias [+ mask]) V per window and head");
  m.def("window_attention_backward", &window_attention_backward, "gradients of window_attention: dQ, dK, dV into the given tensors, dB returned");
  m.def("layer_norm", &layer_norm, "LayerNorm over the last dim of (rows, C) tokens: y, mean, rstd");
  m.def("layer_norm_backward", &layer_norm_backward, "gradients of layer_norm: dx, dweight, dbias");
  m.def("gelu", &gelu, "GELU (erf form) of (rows, C) x + bias into out, which may be x");
  m.def("gelu_backward", &gelu_backward, "gradient of gelu for its input x + bias");
  m.def("token_linear", &token_linear, "x W^T + bias [+ add] of (rows, in) tokens into out (rows, out); add may be out");
  m.def("norm_linear", &norm_linear, "LayerNorm then x W^T + b of (rows, C) tokens (x's rows `rows` where given), fused");
  m.def("residuals", &residuals,
        "out = u + W2 GELU(W1 LN(u) + b1) + b2, u = x + attended Wp^T + bp, fused, row r into out[dest[r]] (r if dest is "
        "empty); out may be x (in place); in_map: x's row dest[r] is attended's row r's (x and out maps)");
  m.def("residuals_backward", &residuals_backward,
        "gradients of residuals: dx, dattended, dWp, dbp, dnorm_weight, dnorm_bias, dW1, db1, dW2, db2");
  m.def("norm_linear_backward", &norm_linear_backward, "gradients of norm_linear (plus carry, if not empty, in dx): dx, dnorm_weight, dnorm_bias, dW, db");
  m.def("token_linear_backward", &token_linear_backward, "gradients of token_linear: dx (empty if not needed), dW, db");
}
